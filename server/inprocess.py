"""An in-process engine: the real ServerApp and ClientApp exchanging real Flower messages, no Ray.

`InProcessGrid` is a Flower ``Grid`` that delivers each instruction to a ClientApp in this process,
through Flower's protobuf wire format both ways, with one persistent ``Context`` per node
(``node_config`` with ``partition-id`` / ``num-partitions``, as the simulation sets it); a raising
ClientApp becomes an error reply, as Flower's simulation worker makes it. Node ids differ from
partition ids on purpose. `run_inprocess` runs a ServerApp over it
(``federated.backend = "inprocess"``): deterministic, no 10 s Ray start, one process to debug.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid

NODE_BASE = 7000  # node ids differ from partition ids: clients must use partition-id


class InProcessGrid(Grid):
    """Delivers instructions to a ClientApp in this process, serialized as on the wire."""

    def __init__(self, client_app, num_nodes: int, node_ids: Optional[list[int]] = None):
        node_ids = node_ids or [NODE_BASE + pid for pid in range(num_nodes)]
        self.client_app = client_app
        self.contexts = {nid: Context(run_id=1, node_id=nid,
                                      node_config={"partition-id": pid, "num-partitions": num_nodes},
                                      state=RecordDict(), run_config={})
                         for pid, nid in enumerate(node_ids)}
        self._replies: list[Message] = []
        self._count = 0

    def set_run(self, run):  # noqa: D102
        pass

    @property
    def run(self):  # noqa: D102
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: D102
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return set(self.contexts)  # as flwr's InMemoryGrid: a set, in no partition order

    def deliver(self, msg: Message) -> Message:
        """One instruction through the wire format to the ClientApp and its reply back."""
        self._count += 1
        msg.metadata.__dict__["_message_id"] = f"m{self._count}"
        received = message_from_proto(message_to_proto(msg))
        try:
            reply = self.client_app(received, self.contexts[received.metadata.dst_node_id])
        except Exception as e:  # noqa: BLE001 - what flwr's vce worker does with a raising app
            reason = str(type(e)) + ":<'" + str(e) + "'>"  # flwr's vce_api.worker format
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                            reply_to=received)
        return message_from_proto(message_to_proto(reply))

    def push_messages(self, messages):  # noqa: D102
        for m in messages:
            t0 = time.perf_counter()
            reply = self.deliver(m)
            self._replies.append((time.perf_counter() - t0, reply))
        return [str(i) for i in range(len(self._replies))]

    def pull_messages(self, message_ids, timeout=None):  # noqa: D102
        """The replies; with ``timeout``, those whose client took longer are dropped (clients
        run one after another here, so each is timed on its own, as if they ran in parallel)."""
        out, self._replies = self._replies, []
        return [reply for seconds, reply in out if timeout is None or seconds <= timeout]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: D102
        self.push_messages(messages)
        return self.pull_messages([], timeout)


@contextmanager
def server_task_identity() -> Iterator[None]:
    """Run/node/task ids as a ServerApp process has them (instruction messages read them)."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def run_inprocess(server_app, client_app, num_nodes: int) -> None:
    """Run ``server_app`` with ``num_nodes`` in-process nodes of ``client_app``."""
    with server_task_identity():
        context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
        server_app(InProcessGrid(client_app, num_nodes), context)
