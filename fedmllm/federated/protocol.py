"""Client <-> server message keys, defined once, and the one reply validation.

Every value a federated algorithm needs on the other side of the wire travels under one of these
names (the Flower Message API carries them in a ``RecordDict``; `server/records.py` is the codec).
This module imports neither Flower nor Ray.

A train instruction (server -> client) holds:
    one ArrayRecord per named state of the algorithm's `Payload` (``global`` = the shared part
    of the global state; SCAFFOLD adds ``scaffold-c``), and
    ``CONFIG`` (ConfigRecord): `SERVER_ROUND`, `LOCAL_STEPS`, `LR`, `ALGORITHM`, `SYSTEM`,
    `EXPERIMENT_ID`, `EXPERIMENT_DIR`, `CLIENT_STORE`, `LORA_RANK` and the algorithm's own keys
    (``proximal-mu`` for FedProx). Round values only: never the whole experiment config.
A train reply (client -> server) holds:
    one ArrayRecord per named state the algorithm expects back (`Algorithm.expected`: ``state``
    = the trained shared state; SCAFFOLD adds ``scaffold-dc``), and
    ``METRICS`` (MetricRecord): `NUM_EXAMPLES` (aggregation weight), `TRAIN_LOSS`, `SECONDS`,
    `BYTES_IN`, `BYTES_OUT`, `CLIENT_FAILED` (0/1), `PARTITION_ID`, `STEPS`, `WALL_SECONDS`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

# Record names inside a RecordDict.
CONFIG = "config"
METRICS = "metrics"

# ConfigRecord keys (server -> client).
SERVER_ROUND = "server-round"
LOCAL_STEPS = "local-steps"
LR = "lr"
ALGORITHM = "algorithm"  # registry name: the client looks up the algorithm's client half
SYSTEM = "system"  # which system (strategy) of the experiment the round belongs to
EXPERIMENT_ID = "experiment-id"  # short hash of the resolved config (clients cache by it)
EXPERIMENT_DIR = "experiment-dir"  # where config.toml and partition.json live (simulation)
CLIENT_STORE = "client-store"  # folder of the clients' local state (simulation); "" = in memory
LORA_RANK = "lora-rank"  # this client's LoRA rank (heterogeneous clients); absent = the configured r
ATTACK = "attack"  # simulated adversary: the attack this client runs (`fedmllm.federated.attacks`)
ATTACK_OPTION = "attack."  # prefix of that attack's options (``attack.factor``)
SLOWDOWN = "slowdown"  # simulated straggler: the round takes this many times its compute time
DP_CLIP = "dp-clip"  # client-side DP: clip the update (trained - received) to this L2 norm
BASELINE = "baseline"  # a baseline's training job (pooled / local), not a federated client's round
POOLED = "pooled"  # with BASELINE: train on the union of every partition (the pooled baseline, simulation)

# MetricRecord keys (client -> server).
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
SECONDS = "seconds"
BYTES_IN = "bytes-in"
BYTES_OUT = "bytes-out"
CLIENT_FAILED = "client-failed"
PARTITION_ID = "partition-id"
STEPS = "steps"
WALL_SECONDS = "wall-seconds"
PEAK_RSS_MB = "peak-rss-mb"  # the client process's peak resident memory so far (MB)
REQUIRED_METRICS = (NUM_EXAMPLES, TRAIN_LOSS, PARTITION_ID)
# Added by the server to aggregated train metrics.
NUM_CLIENTS = "num-clients"

# How each reply metric reduces over clients; every other key is a weighted mean.
# Bytes and failures add up; the round's wall time is the slowest client's; the partition id
# is an identifier, not a quantity, so it is dropped.
METRIC_REDUCTIONS: dict[str, str] = {
    NUM_EXAMPLES: "sum",
    BYTES_IN: "sum",
    BYTES_OUT: "sum",
    CLIENT_FAILED: "sum",
    SECONDS: "max",
    STEPS: "sum",
    WALL_SECONDS: "max",
    PEAK_RSS_MB: "max",
    PARTITION_ID: "drop",
}


class ReplyError(ValueError):
    """A client reply is malformed: wrong records, keys, shapes, dtypes, non-finite values or metrics."""


def _limited(items: list, limit: int = 5) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(map(str, items[:limit])) + more


def check_shapes(state: Mapping[str, Any], expected: Mapping[str, Sequence[int]],
                 *, who: str = "client reply") -> None:
    """Raise `ReplyError` unless ``state`` has exactly the keys of ``expected`` with those shapes.

    ``state`` maps names to anything with a ``.shape``. The message names every missing,
    unexpected and mis-shaped key (up to five of each).
    """
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [f"{k}: got {tuple(state[k].shape)}, expected {tuple(expected[k])}"
             for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    parts = [f"{label} [{_limited(items)}]" for label, items in
             (("missing", missing), ("unexpected", extra), ("shape mismatch", wrong)) if items]
    if parts:
        raise ReplyError(f"{who} does not match what was expected: {', '.join(parts)}")


def validate_reply(partition_id: int, arrays: Mapping[str, Mapping[str, Any]],
                   metrics: Mapping[str, Any], expected: Mapping[str, Mapping[str, Sequence[int]]],
                   *, who: str = "client reply"):
    """The one check of a train reply; returns a `Reply` or raises `ReplyError` naming the fault.

    ``partition_id`` is the client the instruction went to; ``arrays`` the reply's named states
    (numpy arrays), ``metrics`` its metric values, ``expected`` what `Algorithm.expected` said
    this client must send back. Checked: the required metrics are present, finite numbers; the
    reply comes from the partition it was sent to; ``num-examples`` is a positive integer; the
    named states are exactly the expected ones, each with exactly the expected keys and shapes,
    floating point and finite (a NaN or Inf update never reaches an aggregate).
    """
    from fedmllm.federated.algorithms.base import Reply

    for key in REQUIRED_METRICS:
        if key not in metrics:
            raise ReplyError(f"{who} has no metric {key!r}")
        if not isinstance(metrics[key], numbers.Real):  # a list or a string would raise TypeError below
            raise ReplyError(f"{who}: metric {key!r} must be a number, got {metrics[key]!r}")
    for key, value in metrics.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, numbers.Real) and not math.isfinite(float(v)) for v in values):
            raise ReplyError(f"{who}: metric {key!r} is not finite ({value})")
    if float(metrics[PARTITION_ID]) != int(partition_id):
        raise ReplyError(f"{who} claims partition {metrics[PARTITION_ID]}, sent to {partition_id}")
    n = metrics[NUM_EXAMPLES]
    if isinstance(n, bool) or float(n) != int(n) or int(n) < 1:
        raise ReplyError(f"{who}: {NUM_EXAMPLES} must be a positive integer, got {n!r}")
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ReplyError(f"{who}: array records missing {missing}, unexpected {extra}")
    for group, shapes in expected.items():
        check_shapes(arrays[group], shapes, who=f"{who} record {group!r}")
        for key, value in arrays[group].items():
            a = np.asarray(value)
            if not np.issubdtype(a.dtype, np.floating):
                raise ReplyError(f"{who}: {group}/{key} has dtype {a.dtype}, expected floating point")
            if not np.isfinite(a).all():
                bad = int(a.size - np.isfinite(a).sum())
                raise ReplyError(f"{who}: {group}/{key} has {bad} non-finite value(s)")
    return Reply(int(partition_id), int(n), {g: dict(arrays[g]) for g in expected}, dict(metrics))


def shapes_of(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every entry (the ``expected`` argument of `validate_reply`)."""
    return {k: tuple(v.shape) for k, v in state.items()}


def reduce_metrics(metrics: Sequence[Mapping[str, float]], weights: Sequence[float]
                   ) -> dict[str, float]:
    """Combine per-client metric dicts following `METRIC_REDUCTIONS` (default: weighted mean).

    Only keys every client reported are kept (a metric missing on one client has no mean).
    List-valued metrics are averaged element-wise. Weights are normalized here; all-zero weights
    fall back to uniform so that metrics of zero-example clients still reduce.
    """
    if not metrics:
        return {}
    if len(metrics) != len(weights):
        raise ValueError(f"{len(metrics)} metric dicts but {len(weights)} weights")
    total = float(sum(weights))
    p = [float(w) / total for w in weights] if total > 0 else [1.0 / len(weights)] * len(weights)
    keys = [k for k in metrics[0] if all(k in m for m in metrics[1:])]
    out: dict[str, Any] = {}
    for key in keys:
        how = METRIC_REDUCTIONS.get(key, "mean")
        values = [m[key] for m in metrics]
        if how == "drop":
            continue
        if isinstance(values[0], (list, tuple)):
            out[key] = [sum(pi * float(v[j]) for pi, v in zip(p, values))
                        for j in range(len(values[0]))]
        elif how == "sum":
            out[key] = sum(values)
        elif how == "max":
            out[key] = max(values)
        else:
            out[key] = sum(pi * float(v) for pi, v in zip(p, values))
    return out
