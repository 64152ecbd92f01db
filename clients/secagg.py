"""The client half of secure aggregation: Flower's ``secaggplus_mod`` around our train handler.

Under ``federated.secagg`` the server (server/secagg.py) runs Flower's SecAgg+ workflow: four train
messages per round, each carrying Flower's ``secaggplus_configs`` record. `secagg_train` hands them
to Flower's ``secaggplus_mod`` unchanged (key generation, secret sharing, masking, unmasking shares:
all Flower's). In the collect-masked-vectors stage the mod calls `_masked_reply`, which runs our
normal train handler on the message minus that record (exactly the payload GridTransport sends) and
puts the reply in the legacy ``FitRes`` layout the mod quantizes and masks: the shared state as a
list of flat float64 arrays in sorted key order (`_flat64`), the weight (``num_examples``; 1 under
user-level DP, whose mean is uniform, `fedmllm.federated.privacy`), the train metrics. An honest
client refuses (raises, i.e. drops out of the round) rather than send what the sum would silently
corrupt: another state than it received, non-finite values, more examples than ``max_weight``,
values beyond the clipping range. Flower's stochastic rounding draws from numpy's global RNG: it
is seeded from (experiment, system, round, partition), so a resumed run rounds alike, and restored
afterwards.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from fedmllm.experiment import derive_seed
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms.base import GLOBAL, STATE
from server.records import decode_groups, decode_metrics

Handler = Callable[[Message, Context], Message]


def is_secagg_stage(msg: Message) -> bool:
    """True for the train messages of Flower's SecAgg+ workflow (never for GridTransport's)."""
    return RECORD_KEY_CONFIGS in msg.content.config_records


def secagg_train(msg: Message, context: Context, train: Handler) -> Message:
    """One SecAgg+ stage: Flower's ``secaggplus_mod`` with ``train`` for the masked vector."""
    saved = np.random.get_state()
    try:
        return secaggplus_mod(msg, context, lambda m, c: _masked_reply(m, c, train))
    finally:
        np.random.set_state(saved)


def _masked_reply(msg: Message, context: Context, train: Handler) -> Message:
    msg.content.config_records.pop(RECORD_KEY_CONFIGS)  # the mod keeps its own reference
    received = {k: tuple(a.shape) for k, a in msg.content[GLOBAL].items()}
    reply = train(msg, context)
    if reply.has_error():  # e.g. the node refused the instruction: this client drops out
        raise RuntimeError(reply.error.reason)
    arrays, metrics = decode_groups(reply.content), decode_metrics(reply.content)
    config = dict(msg.content[P.CONFIG])
    # User-level DP (the payload names a clipping norm) averages clients uniformly: weight 1 each.
    weight = 1 if P.DP_CLIP in config else int(metrics[P.NUM_EXAMPLES])
    _check(arrays, received, weight, dict(context.state.config_records[RECORD_KEY_STATE]))
    np.random.seed(derive_seed(0, "secagg", config.get(P.EXPERIMENT_ID, ""), config.get(P.SYSTEM, ""),
                               config.get(P.SERVER_ROUND, 0), int(context.node_config["partition-id"])))
    state = arrays[STATE]
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([_flat64(state[k]) for k in sorted(state)]),
                    weight, metrics)
    return Message(fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def _flat64(a: np.ndarray) -> np.ndarray:
    """Flat (Flower's unmask stage leaves a 0-d array unscaled) and float64: the mod quantizes in
    the array's dtype, and float32 near T = 2**22 rounds to a quarter of a quantization step.
    Only the masked int64 vector leaves the client, so this costs no bytes."""
    return np.asarray(a, dtype=np.float64).reshape(-1)


def _check(arrays: dict, received: dict, num_examples: int, secagg: dict) -> None:
    """Refuse a reply the masked sum could not carry faithfully (``num_examples``: the client's
    weight; ``secagg``: the mod's state)."""
    if set(arrays) != {STATE}:
        raise ValueError(f"SecAgg+ sums one {STATE!r} state per client, this reply has {sorted(arrays)}")
    P.check_shapes(arrays[STATE], received, who="SecAgg+ client state")
    state = arrays[STATE]
    bad = sorted(k for k, a in state.items() if not np.isfinite(a).all())
    if bad:
        raise ValueError(f"SecAgg+: non-finite values in {bad[:5]}")
    max_weight, clip = float(secagg["max_weight"]), float(secagg["clipping_range"])
    if num_examples > max_weight:
        raise ValueError(f"SecAgg+: {num_examples} examples exceed federated.secagg_max_weight = {max_weight:g}")
    # Flower clips (n / max_weight) x to [-c, c] before quantizing; a clipped value would be lost.
    peak = max((float(np.abs(a).max()) for a in state.values() if a.size), default=0.0)
    if peak * num_examples / max_weight > clip:
        raise ValueError(f"SecAgg+: a state value of magnitude {peak:.4g} would be clipped "
                         f"(weighted: {peak * num_examples / max_weight:.4g} > federated.secagg_clipping_range "
                         f"= {clip:g}); raise the clipping range")
