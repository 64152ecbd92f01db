"""Client <-> server message keys, defined once, and reply validation.

Every value a federated algorithm needs on the other side of the wire travels under one of these
names (the Flower Message API carries them in a ``RecordDict``). The Flower glue in ``server/``
and ``clients/`` imports them from here; this module imports neither Flower nor Ray.

A train instruction (server -> client) holds:
    ``ARRAYS``            ArrayRecord: the global trainable state (adapter weights).
    ``CONFIG``            ConfigRecord: ``SERVER_ROUND``, ``LOCAL_STEPS``, ``LR``,
                          ``RUN_CONFIG``, ``SYSTEM``, and the algorithm's keys
                          (``PROXIMAL_MU`` for FedProx).
    ``SCAFFOLD_C_GLOBAL`` ArrayRecord (SCAFFOLD only): the server control variate c,
                          same keys and shapes as ``ARRAYS``.
A train reply (client -> server) holds:
    ``ARRAYS``            ArrayRecord: the client's trained state y_i (same keys/shapes).
    ``METRICS``           MetricRecord: ``NUM_EXAMPLES`` (aggregation weight), ``TRAIN_LOSS``,
                          ``SECONDS``, ``BYTES_IN``, ``BYTES_OUT``, ``CLIENT_FAILED`` (0/1),
                          ``PARTITION_ID`` (used to order replies deterministically),
                          ``STEPS``, ``WALL_SECONDS``.
    ``SCAFFOLD_DC``       ArrayRecord (SCAFFOLD only): dc_i = c_i+ - c_i.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

# Record names inside a RecordDict (Flower's FedAvg defaults are "arrays" and "config").
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SCAFFOLD_C_GLOBAL = "scaffold-c-global"
SCAFFOLD_DC = "scaffold-dc"

# ConfigRecord keys (server -> client).
SERVER_ROUND = "server-round"  # Flower's FedAvg.configure_train writes this one itself
LOCAL_STEPS = "local-steps"
LR = "lr"
PROXIMAL_MU = "proximal-mu"  # the key Flower's FedProx writes
SCAFFOLD_CONTROL = "scaffold-control"  # how clients estimate c_i+: "option2" or "gradient"
RUN_CONFIG = "run-config"  # the resolved config (TOML text): run_simulation leaves run_config empty
SYSTEM = "system"  # which system (strategy or baseline) of the experiment the round belongs to

# MetricRecord keys (client -> server).
NUM_EXAMPLES = "num-examples"  # Flower's default `weighted_by_key`
TRAIN_LOSS = "train-loss"
SECONDS = "seconds"
BYTES_IN = "bytes-in"
BYTES_OUT = "bytes-out"
CLIENT_FAILED = "client-failed"
PARTITION_ID = "partition-id"
STEPS = "steps"
WALL_SECONDS = "wall-seconds"
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
    PARTITION_ID: "drop",
}


class ReplyError(ValueError):
    """A client reply does not match what the server sent (keys or shapes)."""


def validate_reply(state: Mapping[str, Any], expected: Mapping[str, Sequence[int]],
                   *, who: str = "client reply") -> None:
    """Raise `ReplyError` unless ``state`` has exactly the keys of ``expected`` with those shapes.

    ``state`` maps names to anything with a ``.shape`` (numpy / torch arrays, Flower ``Array``).
    The message names every missing, unexpected and mis-shaped key (up to five of each), so a
    client built with a different adapter configuration is caught before aggregation instead of
    being silently broadcast.
    """
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [
        f"{k}: got {tuple(state[k].shape)}, expected {tuple(expected[k])}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    ]
    if not (missing or extra or wrong):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", extra), ("shape mismatch", wrong)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{label} [{'; '.join(map(str, items[:5]))}]{more}")
    raise ReplyError(f"{who} does not match the global state: {', '.join(parts)}")


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
