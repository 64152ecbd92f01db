"""The fedmllm ClientApp (Flower Message API): thin glue over `fedmllm.federated.client`.

The client never switches on the strategy's name: the train message names the algorithm, whose
client half (looked up in the registry) prepares the hooks and the reply from the payload. The
client builds its own data slice: it reads its ``partition-id`` from ``context.node_config`` and the
experiment (config + saved partition) from the run directory the message names; the message carries
round values only. Local state (SCAFFOLD's c_i, personal keys) is kept in the run directory's client
store (simulation) or, without one, in memory. The base model is built once per process (Ray actor)
and cached. Under ``federated.secagg`` a round's train messages are Flower's SecAgg+ stages, handed
to Flower's ``secaggplus_mod`` (clients/secagg.py), which calls this train handler for the training.

The node checks every train and evaluate message before it loads anything
(`fedmllm.federated.node_policy`) and answers a refused one with an error reply naming the reason.
Always: the experiment directory is a federated fedmllm run directory whose config.toml hashes to
the message's experiment id, and the message's client store lies inside it. Node settings (Flower
``node_config``, e.g. ``flower-supernode --node-config "partition-id=0 fedmllm-experiment='/runs/a'"``):

- ``fedmllm-experiment``: the only experiment directory served; a message naming another is refused.
- ``fedmllm-state-dir``: the node's own client store (the message's is not used).
- ``fedmllm-models``: comma-separated models the node may build (names, hub ids, local folders).
- ``fedmllm-data-root``: the folder that every local data source of the config must lie in.
"""

from __future__ import annotations

import functools
import time

from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from clients.secagg import is_secagg_stage, secagg_train
from fedmllm.federated import protocol as P
from fedmllm.federated.client import ClientStore, client_runtime
from fedmllm.federated.node_policy import InstructionRefusedError, NodePolicy, partition_id
from server.records import array_bytes, decode_payload, encode_groups

app = ClientApp()
_STORES: dict[str, ClientStore] = {}


def _store(root: str) -> ClientStore:
    if root not in _STORES:
        _STORES[root] = ClientStore(root or None)
    return _STORES[root]


def _node(msg: Message, context: Context):
    """(payload, runtime, partition id, client store) of an instruction this node accepts."""
    payload = decode_payload(msg.content)
    config = payload.config
    policy = NodePolicy.from_node_config(context.node_config)
    policy.check_job(config)
    experiment_dir = policy.experiment_dir(config.get(P.EXPERIMENT_DIR))
    store_root = policy.client_store(str(config.get(P.CLIENT_STORE, "")), experiment_dir)
    runtime = client_runtime(experiment_dir, str(config[P.EXPERIMENT_ID]), accept=policy.check_config)
    store = _store(store_root)
    return payload, runtime, partition_id(context.node_config), store


def _refusing(handler):
    """``handler``, answering an instruction the node refuses with an error reply (the reason, no traceback)."""
    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except InstructionRefusedError as e:
            reason = f"{type(e).__name__}: {e}"
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
    return wrapped


@app.query()
@_refusing
def query(msg: Message, context: Context) -> Message:
    """This node's partition id: the server addresses clients by partition (node ids are random
    in every simulation); a node without one answers with an error naming the fix."""
    metrics = MetricRecord({P.PARTITION_ID: partition_id(context.node_config)})
    return Message(content=RecordDict({P.METRICS: metrics}), reply_to=msg)


@app.evaluate()
@_refusing
def evaluate(msg: Message, context: Context) -> Message:
    """Score this client's own model (global shared part + its local part after the message's
    round) on its local test split; reply ``score/<task>`` and ``count/<task>`` metrics."""
    from fedmllm.federated.personal import COUNT, SCORE

    payload, runtime, partition_id, store = _node(msg, context)
    server_round, system = int(payload.config[P.SERVER_ROUND]), str(payload.config[P.SYSTEM])
    scores, counts = runtime.evaluate_round(partition_id, payload, store.load(system, partition_id, server_round + 1))
    metrics = {P.PARTITION_ID: partition_id, **{SCORE + t: v for t, v in scores.items()},
               **{COUNT + t: n for t, n in counts.items()}}
    return Message(content=RecordDict({P.METRICS: MetricRecord(metrics)}), reply_to=msg)


@app.train()
@_refusing
def train(msg: Message, context: Context) -> Message:
    """One round of local training of this node's partition; reply with what the algorithm asks."""
    if is_secagg_stage(msg):  # federated.secagg: Flower's SecAgg+ mod, which calls back in here
        return secagg_train(msg, context, train)
    t0 = time.perf_counter()
    payload, runtime, partition_id, store = _node(msg, context)
    server_round, system = int(payload.config[P.SERVER_ROUND]), str(payload.config[P.SYSTEM])
    if partition_id in runtime.cfg.federated.fail_clients and not payload.config.get(P.BASELINE):
        # Fault injection (federated.fail_clients): a crash mid-round, reported by Flower as an
        # error reply; the server completes the round with the others. A baseline's job is not
        # a federated client's round (the server-side baselines never failed either).
        raise RuntimeError(f"injected failure of client {partition_id} in round {server_round}")
    update = runtime.run_round(partition_id, payload, store.load(system, partition_id, server_round))
    store.save(system, partition_id, server_round, update.local_state)
    content = encode_groups(update.arrays)
    content[P.METRICS] = MetricRecord({
        P.NUM_EXAMPLES: update.num_examples, P.TRAIN_LOSS: update.train_loss, P.SECONDS: update.seconds,
        P.BYTES_IN: array_bytes(msg.content), P.BYTES_OUT: array_bytes(content), P.CLIENT_FAILED: 0,
        P.PARTITION_ID: partition_id, P.STEPS: update.steps, P.WALL_SECONDS: time.perf_counter() - t0,
        P.PEAK_RSS_MB: peak_rss_mb(),
    })
    return Message(content=content, reply_to=msg)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports ru_maxrss in KB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (2**20 if sys.platform == "darwin" else 1024)
