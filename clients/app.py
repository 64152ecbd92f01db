"""The fedmllm ClientApp (Flower Message API): thin glue over `fedmllm.federated.client`.

The client never switches on the strategy's name: the train message names the algorithm, whose
client half (looked up in the registry) prepares the hooks and the reply from the payload. The
client builds its own data slice: it reads its ``partition-id`` from ``context.node_config`` and the
experiment (config + saved partition) from the run directory the message names (in a deployment,
``node_config["fedmllm-experiment"]`` overrides it); the message carries round values only. Local
state (SCAFFOLD's c_i, personal keys) is kept in the run directory's client store (simulation) or,
without one, in memory. The base model is built once per process (Ray actor) and cached.
"""

from __future__ import annotations

import time

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmllm.federated import protocol as P
from fedmllm.federated.client import ClientStore, client_runtime
from server.records import array_bytes, decode_payload, encode_groups

app = ClientApp()
_STORES: dict[str, ClientStore] = {}


def _store(root: str) -> ClientStore:
    if root not in _STORES:
        _STORES[root] = ClientStore(root or None)
    return _STORES[root]


@app.query()
def query(msg: Message, context: Context) -> Message:
    """This node's partition id: the server addresses clients by partition (node ids are random
    in every simulation)."""
    metrics = MetricRecord({P.PARTITION_ID: int(context.node_config["partition-id"])})
    return Message(content=RecordDict({P.METRICS: metrics}), reply_to=msg)


def _node(msg: Message, context: Context):
    """(payload, runtime, partition id, client store) of an instruction to this node."""
    payload = decode_payload(msg.content)
    config = payload.config
    experiment_dir = str(context.node_config.get("fedmllm-experiment", config[P.EXPERIMENT_DIR]))
    runtime = client_runtime(experiment_dir, str(config[P.EXPERIMENT_ID]))
    store = _store(str(context.node_config.get("fedmllm-state-dir", config.get(P.CLIENT_STORE, ""))))
    return payload, runtime, int(context.node_config["partition-id"]), store


@app.evaluate()
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
def train(msg: Message, context: Context) -> Message:
    """One round of local training of this node's partition; reply with what the algorithm asks."""
    t0 = time.perf_counter()
    payload, runtime, partition_id, store = _node(msg, context)
    server_round, system = int(payload.config[P.SERVER_ROUND]), str(payload.config[P.SYSTEM])
    if partition_id in runtime.cfg.federated.fail_clients:
        # Fault injection (federated.fail_clients): a crash mid-round, reported by Flower as an
        # error reply; the server completes the round with the others.
        raise RuntimeError(f"injected failure of client {partition_id} in round {server_round}")
    update = runtime.run_round(partition_id, payload, store.load(system, partition_id, server_round))
    store.save(system, partition_id, server_round, update.local_state)
    content = encode_groups(update.arrays)
    content[P.METRICS] = MetricRecord({
        P.NUM_EXAMPLES: update.num_examples, P.TRAIN_LOSS: update.train_loss, P.SECONDS: update.seconds,
        P.BYTES_IN: array_bytes(msg.content), P.BYTES_OUT: array_bytes(content), P.CLIENT_FAILED: 0,
        P.PARTITION_ID: partition_id, P.STEPS: update.steps, P.WALL_SECONDS: time.perf_counter() - t0,
    })
    return Message(content=content, reply_to=msg)
