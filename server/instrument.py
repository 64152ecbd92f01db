"""Measurement of every round, and nothing else: per-client metrics and drift.

`Instrument(log, lora_factors)` is the round loop's observer (`fedmllm.federated.rounds.Observer`):
it logs one ``client_train`` event per validated reply and returns the round's drift measures
(`fedmllm.federated.drift.drift_report`) to be added to the ``round`` event. It sets no learning
rate, seeds nothing and drops no client (that is the loop's policy); with
``federated.instrument = false`` it is not called at all (secure aggregation hides per-client
updates).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from fedmllm.federated import lora
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import STATE, Reply
from fedmllm.federated.drift import drift_report


def client_view(global_before: dict, reply_state: dict) -> dict:
    """A client's whole LoRA state as the server can know it: the global state it started from,
    truncated to the client's rank, overlaid with what it uploaded (a frozen factor it did not
    upload is the one it received; the residual R is the global one)."""
    prefixes = lora.layers([k for k in global_before if not lora.is_residual(k)])
    ranks = {int(v.shape[0]) for k, v in reply_state.items() if k.endswith(lora.A_SUFFIX)} | \
            {int(v.shape[1]) for k, v in reply_state.items() if k.endswith(lora.B_SUFFIX)}
    base = lora.truncate(global_before, ranks.pop()) if prefixes and len(ranks) == 1 else dict(global_before)
    return {**base, **reply_state}


class Instrument:
    """Per-client events, drift and the LoRA aggregation error of one system's rounds."""

    def __init__(self, system: str, log: Callable[[dict], None], lora_factors: Optional[list] = None,
                 scaling: Optional[float] = None, personalized: bool = False):
        """``scaling``: the LoRA scaling s (None: not a LoRA method); ``personalized``: clients keep
        keys the server never sees, so their whole update is unknown (no aggregation error)."""
        self.system, self.log, self.lora_factors = system, log, lora_factors or []
        self.scaling, self.personalized = scaling, personalized

    def __call__(self, server_round: int, global_before: dict, replies: Sequence[Reply]) -> dict:
        for r in replies:
            m = r.metrics
            self.log({"event": "client_train", "system": self.system, "round": server_round,
                      "client": r.partition_id, "train_loss": float(m[P.TRAIN_LOSS]),
                      "examples": r.num_examples, "seconds": float(m.get(P.SECONDS, 0.0)),
                      "bytes_in": int(m.get(P.BYTES_IN, 0)), "bytes_out": int(m.get(P.BYTES_OUT, 0))})
        return {"drift": self.drift(global_before, replies)}

    def aggregated(self, server_round: int, global_before: dict, replies: Sequence[Reply],
                   global_after: dict) -> dict:
        """``lora_aggregation_error`` (and ``_rel``): ||dW_new - sum_k p_k dW_k||_F summed over
        layers, dW = R + s B A (`lora.aggregation_error`): 0 for exact rules, the discrepancy for
        FedIT. Absent for non-LoRA methods and personalized rules."""
        if self.scaling is None or self.personalized or not replies:
            return {}
        if not lora.layers([k for k in global_after if not lora.is_residual(k)]):
            return {}
        states = [client_view(global_before, r.arrays[STATE]) for r in replies]
        err, rel = lora.aggregation_error(global_after, states, [r.num_examples for r in replies], self.scaling)
        return {"lora_aggregation_error": err, "lora_aggregation_error_rel": rel}

    def drift(self, global_before: dict, replies: Sequence[Reply]) -> dict:
        """Drift over the clients' shared states (heterogeneous LoRA ranks zero-padded to the
        global rank: the comparison space HetLoRA aggregates in); {} when keys or shapes still
        differ from the global state."""
        if not replies:
            return {}
        states = [r.arrays[STATE] for r in replies]
        if lora.layers(list(states[0]), strict=False) and \
                any(s[k].shape != global_before[k].shape for s in states for k in s):
            rank = lora.rank_of({k: v for k, v in global_before.items() if not lora.is_residual(k)})
            states = [{k: v for k, v in lora.zero_pad(client_view(global_before, s), rank).items() if k in s}
                      for s in states]
        same = all(set(s) == set(states[0]) and all(s[k].shape == global_before[k].shape for k in s)
                   for s in states)
        if not same:
            return {}
        before = {k: global_before[k] for k in states[0]}
        factors = [f for f in self.lora_factors if f[0] in states[0] and f[1] in states[0]]
        report = drift_report(before, states, [r.num_examples for r in replies], factors)
        report["clients"] = [r.partition_id for r in replies]
        return report
