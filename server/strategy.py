"""The one generic Flower strategy, and the round loop's transport over a Flower Grid.

`GridTransport` is what fedmllm's own round loop (`fedmllm.federated.rounds.RoundLoop`, the one
that checkpoints and resumes) uses: it sends each sampled client its own payload and returns the
replies by partition; the loop validates them against what the algorithm expects from that client
and aggregates. `AlgorithmStrategy` wraps any registered algorithm as a Flower ``Strategy``
(``configure_train`` / ``aggregate_train`` through the same transport and the same validation), so
Flower's own ``Strategy.start`` can drive it too (tests check that both loops agree).

Node ids are random in every simulation, so clients are addressed by partition id: each node is
asked its ``partition-id`` once (a ``query`` message the ClientApp answers from its node config).
"""

from __future__ import annotations

import re
import time
from logging import WARNING
from typing import Callable, Hashable, Iterable, Optional

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import Algorithm, Payload
from fedmllm.federated.rounds import TIMEOUT, RawReply, round_payloads, sampled_partitions, validated_replies
from server.records import decode_groups, decode_metrics, encode_payload, numpy_to_record, record_to_numpy

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit): \S.*")


def error_summary(reason: str, limit: int = 300) -> str:
    """The root cause line (``RuntimeError: ...``) of a client error reply's reason.

    Under Ray the reason is a whole remote traceback (colour codes, Flower's
    ``ClientAppException`` wrapper around the app's exception); its first 300 characters named
    neither the exception nor its message. Falls back to the reason's start, whitespace folded.
    """
    text = _ANSI.sub("", reason or "")
    for line in text.splitlines():
        line = line.strip()
        if _EXCEPTION_LINE.fullmatch(line) and "ClientAppException" not in line.split(":")[0]:
            return line[:limit]
    return " ".join(text.split())[:limit]


class GridTransport:
    """The round loop's `Transport` over a Flower Grid: one train message per sampled partition's
    node, replies keyed back by partition (error replies become failures with their root cause)."""

    def __init__(self, grid: Grid, *, timeout: float = 3600.0, round_timeout: float = 0.0,
                 log: Optional[Callable[[dict], None]] = None):
        """``round_timeout`` > 0: a round's replies are collected for that many seconds, the
        partitions that have not answered by then are failures ("timeout ...")."""
        self.grid, self.timeout, self.log = grid, timeout, log
        self.round_timeout = float(round_timeout)
        self.partitions: dict[int, int] = {}  # node id -> partition id, asked once per node
        self.query_errors: dict[int, str] = {}  # node id -> why it did not say (server.federation reads it)

    def nodes_by_partition(self) -> dict[int, int]:
        """partition id -> node id of every connected node (asked once per node)."""
        unknown = [n for n in self.grid.get_node_ids() if n not in self.partitions]
        if unknown:
            t0 = time.perf_counter()
            messages = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in unknown]
            for m in self.grid.send_and_receive(messages, timeout=self.timeout):
                if not m.has_error():
                    self.partitions[m.metadata.src_node_id] = int(m.content[P.METRICS][P.PARTITION_ID])
                else:
                    self.query_errors[m.metadata.src_node_id] = error_summary(str(m.error.reason))
            if self.log:
                self.log({"event": "node_partitions", "asked": len(unknown), "known": len(self.partitions),
                          "seconds": time.perf_counter() - t0})
        return {pid: node for node, pid in self.partitions.items()}

    def messages(self, payloads: dict[int, Payload], message_type: str = MessageType.TRAIN
                 ) -> tuple[list[Message], dict[int, str]]:
        """One message per partition's node; partitions without a node are failures."""
        nodes = self.nodes_by_partition()
        messages, missing = [], {}
        for pid, payload in sorted(payloads.items()):
            if pid not in nodes:
                missing[pid] = "no connected node has this partition id"
                continue
            messages.append(Message(encode_payload(payload), dst_node_id=nodes[pid],
                                    message_type=message_type))
        return messages, missing

    def decode(self, replies: Iterable[Message]) -> tuple[dict[int, RawReply], dict[int, str]]:
        """Replies keyed by the partition of the node they came from; error replies as failures."""
        raw, failures = {}, {}
        for m in replies:
            pid = self.partitions.get(m.metadata.src_node_id)
            if pid is None:
                continue  # a node we never addressed
            if m.has_error():
                failures[pid] = error_summary(str(m.error.reason))
            else:
                raw[pid] = RawReply(decode_groups(m.content), decode_metrics(m.content))
        return raw, failures

    def exchange(self, server_round: int, payloads: dict[int, Payload], message_type: str = MessageType.TRAIN):
        """Send every payload, wait for the replies (`rounds.Transport`)."""
        messages, failures = self.messages(payloads, message_type)
        timeout = self.round_timeout if self.round_timeout > 0 and message_type == MessageType.TRAIN else self.timeout
        raw, failed = self.decode(self.grid.send_and_receive(messages, timeout=timeout))
        failures.update(failed)
        missing = f"{TIMEOUT}: no reply within federated.round_timeout_s = {timeout:g} s" \
            if timeout == self.round_timeout else "no reply"
        failures.update({pid: missing for pid in payloads if pid not in raw and pid not in failures})
        return raw, failures

    def exchange_jobs(self, server_round: int, jobs: dict[Hashable, tuple[int, Payload]]
                      ) -> tuple[dict[Hashable, RawReply], dict[Hashable, str]]:
        """`exchange` for jobs that may share a partition's node (the baselines' jobs: pooled beside
        partition 0's local one): ``jobs`` maps a key to (partition id, payload), sent in that
        order; replies and failures come back by key (a reply is matched to its instruction's
        message id, not to its node)."""
        nodes = self.nodes_by_partition()
        sent: list[tuple[Hashable, Message]] = []
        failures: dict[Hashable, str] = {}
        for key, (pid, payload) in jobs.items():
            if pid not in nodes:
                failures[key] = "no connected node has this partition id"
                continue
            sent.append((key, Message(encode_payload(payload), dst_node_id=nodes[pid],
                                      message_type=MessageType.TRAIN)))
        replies = self.grid.send_and_receive([m for _, m in sent], timeout=self.timeout)
        by_id = {m.metadata.message_id: key for key, m in sent}  # set when the grid pushed them
        raw: dict[Hashable, RawReply] = {}
        for m in replies:
            key = by_id.get(m.metadata.reply_to_message_id)
            if key is None:
                continue  # not an answer to these jobs
            if m.has_error():
                failures[key] = error_summary(str(m.error.reason))
            else:
                raw[key] = RawReply(decode_groups(m.content), decode_metrics(m.content))
        failures.update({key: "no reply" for key in jobs if key not in raw and key not in failures})
        return raw, failures

    def evaluate(self, server_round: int, payloads: dict[int, Payload]):
        """Evaluate messages (each client's own model on its local test split)."""
        return self.exchange(server_round, payloads, MessageType.EVALUATE)


class AlgorithmStrategy(Strategy):
    """Any `Algorithm` as a Flower strategy (for Flower's own ``Strategy.start`` loop)."""

    def __init__(self, algorithm: Algorithm, *, round_config: Optional[Callable[[int], dict]] = None,
                 seed: int = 0, clients_per_round: int = 0, timeout: float = 3600.0):
        """``round_config(round)``: the round's config values (lr, local steps, experiment keys)."""
        self.algorithm = algorithm
        self.round_config = round_config or (lambda r: {})
        self.seed, self.clients_per_round, self.timeout = seed, clients_per_round, timeout
        self.transport: Optional[GridTransport] = None
        self._global: dict = {}
        self._sent: list[int] = []  # the partitions configured this round
        self._failures: dict[int, str] = {}  # configured partitions without a node

    # --- Flower's Strategy interface (Strategy.start drives it; no checkpoints there) -------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.transport is None or self.transport.grid is not grid:
            self.transport = GridTransport(grid, timeout=self.timeout)
        self._global = record_to_numpy(arrays)
        if server_round == 1:
            self._global = self.algorithm.init(self._global) or self._global
        clients = sampled_partitions(self.seed, len(list(grid.get_node_ids())), self.clients_per_round,
                                     server_round)
        base = {**dict(config), **self.round_config(server_round), P.SERVER_ROUND: server_round,
                P.ALGORITHM: self.algorithm.name}
        payloads = round_payloads(self.algorithm, server_round, self._global, clients, base)
        messages, self._failures = self.transport.messages(payloads)
        self._sent = sorted(payloads)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        """Aggregate the valid replies (partition order); as in `RoundLoop`, error replies, replies
        flagged ``client-failed``, malformed ones and missing ones are failures: left out, logged,
        and counted in the metrics' ``client-failed``."""
        assert self.transport is not None, "aggregate_train before configure_train"
        raw, failures = self.transport.decode(replies)
        failures.update(self._failures)
        valid = validated_replies(self.algorithm, server_round, self._global,
                                  sorted(set(self._sent) | set(raw)), raw, failures)
        for pid, reason in sorted(failures.items()):
            log(WARNING, "round %s: client %s left out: %s", server_round, pid, reason)
        if len(valid) < self.algorithm.min_replies():
            return None, (MetricRecord({P.NUM_CLIENTS: 0, P.CLIENT_FAILED: len(failures)}) if failures else None)
        new = self.algorithm.aggregate(server_round, self._global, valid)
        metrics = P.reduce_metrics([r.metrics for r in valid], [r.num_examples for r in valid])
        return numpy_to_record(new), MetricRecord({**metrics, P.NUM_CLIENTS: len(valid),
                                                   P.CLIENT_FAILED: len(failures)})

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []  # the global model is evaluated server-side

    def aggregate_evaluate(self, server_round, replies):
        return None

    def summary(self) -> None:
        """Nothing to print: fedmllm logs to metrics.jsonl."""
