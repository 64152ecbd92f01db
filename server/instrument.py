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

from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import STATE, Reply
from fedmllm.federated.drift import drift_report


class Instrument:
    """Per-client events and drift of one system's rounds."""

    def __init__(self, system: str, log: Callable[[dict], None], lora_factors: Optional[list] = None):
        self.system, self.log, self.lora_factors = system, log, lora_factors or []

    def __call__(self, server_round: int, global_before: dict, replies: Sequence[Reply]) -> dict:
        for r in replies:
            m = r.metrics
            self.log({"event": "client_train", "system": self.system, "round": server_round,
                      "client": r.partition_id, "train_loss": float(m[P.TRAIN_LOSS]),
                      "examples": r.num_examples, "seconds": float(m.get(P.SECONDS, 0.0)),
                      "bytes_in": int(m.get(P.BYTES_IN, 0)), "bytes_out": int(m.get(P.BYTES_OUT, 0))})
        return {"drift": self.drift(global_before, replies)}

    def drift(self, global_before: dict, replies: Sequence[Reply]) -> dict:
        """Drift over the clients' shared states; {} when they differ in keys or shapes from the
        global state (heterogeneous clients: no common space to compare updates in)."""
        if not replies:
            return {}
        states = [r.arrays[STATE] for r in replies]
        same = all(set(s) == set(states[0]) and all(s[k].shape == global_before[k].shape for k in s)
                   for s in states)
        if not same:
            return {}
        before = {k: global_before[k] for k in states[0]}
        factors = [f for f in self.lora_factors if f[0] in before and f[1] in before]
        report = drift_report(before, states, [r.num_examples for r in replies], factors)
        report["clients"] = [r.partition_id for r in replies]
        return report
