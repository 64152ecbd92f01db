"""The fedmllm ClientApp (Flower Message API): thin glue over `fedmllm.federated.runtime`.

The client never switches on the strategy's name: algorithm terms arrive as message keys
(``proximal-mu`` → proximal term; a ``scaffold-c-global`` record → SCAFFOLD correction, with the
client's own control variate kept in ``context.state``). The experiment config travels as TOML
in the train config, so the app behaves the same under ``flwr run`` and ``run_simulation``; the
base model and data are built once per process (Ray actor) and cached.
"""

from __future__ import annotations

import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmllm.federated import protocol as P
from fedmllm.federated.runtime import client_runtime

SCAFFOLD_C_LOCAL = "scaffold-c-local"  # context.state record: this client's control variate

app = ClientApp()


def _control(msg: Message, context: Context, state: dict[str, torch.Tensor]):
    """(c_global, c_local) when the server runs SCAFFOLD, else None."""
    if P.SCAFFOLD_C_GLOBAL not in msg.content:
        return None
    c_global = msg.content[P.SCAFFOLD_C_GLOBAL].to_torch_state_dict()
    if SCAFFOLD_C_LOCAL in context.state:
        c_local = context.state[SCAFFOLD_C_LOCAL].to_torch_state_dict()
    else:
        c_local = {k: torch.zeros_like(v) for k, v in state.items()}
    return c_global, c_local


@app.query()
def query(msg: Message, context: Context) -> Message:
    """This node's partition id: the server samples partitions reproducibly, and node ids are
    random in every simulation (`server.instrument.PartitionOrderedGrid`)."""
    metrics = MetricRecord({P.PARTITION_ID: int(context.node_config["partition-id"])})
    return Message(content=RecordDict({P.METRICS: metrics}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train this client's adapter from the global state and reply with the new state."""
    t0 = time.perf_counter()
    config = msg.content[P.CONFIG]
    runtime = client_runtime(str(config[P.RUN_CONFIG]))
    partition_id = int(context.node_config["partition-id"])
    server_round = int(config[P.SERVER_ROUND])
    if partition_id in runtime.cfg.federated.fail_clients:
        # Fault injection (federated.fail_clients): a crash mid-round, reported by Flower as an
        # error reply; the server completes the round with the others.
        raise RuntimeError(f"injected failure of client {partition_id} in round {server_round}")
    state = msg.content[P.ARRAYS].to_torch_state_dict()
    control = _control(msg, context, state)
    result = runtime.train(partition_id, state, server_round, lr=float(config[P.LR]),
                           steps=int(config[P.LOCAL_STEPS]),
                           proximal_mu=float(config.get(P.PROXIMAL_MU, 0.0)), control=control,
                           control_rule=str(config.get(P.SCAFFOLD_CONTROL, "option2")))
    content = RecordDict({P.ARRAYS: ArrayRecord(result.state)})
    bytes_in = sum(r.count_bytes() for r in msg.content.array_records.values())
    if control is not None:
        content[P.SCAFFOLD_DC] = ArrayRecord(result.control_delta)
        context.state[SCAFFOLD_C_LOCAL] = ArrayRecord(result.control_new)
    bytes_out = sum(r.count_bytes() for r in content.array_records.values())
    content[P.METRICS] = MetricRecord({
        P.NUM_EXAMPLES: result.num_examples, P.TRAIN_LOSS: result.train_loss, P.SECONDS: result.seconds,
        P.BYTES_IN: bytes_in, P.BYTES_OUT: bytes_out, P.CLIENT_FAILED: 0, P.PARTITION_ID: partition_id,
        "steps": result.steps, "wall-seconds": time.perf_counter() - t0,
    })
    return Message(content=content, reply_to=msg)
