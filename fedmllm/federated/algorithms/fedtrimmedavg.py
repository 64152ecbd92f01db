"""``fedtrimmedavg``: coordinate-wise mean after cutting the ``beta`` fraction at both tails
(Yin et al. 2018), `robust.trimmed_mean`; unweighted like the paper; equal to Flower's
``FedTrimmedAvg`` (tests/test_robust.py)."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import STATE, Algorithm, merge, register_algorithm
from fedmllm.federated.robust import trimmed_mean


@register_algorithm
class FedTrimmedAvg(Algorithm):
    """Coordinate-wise trimmed mean of the client states."""

    name = "fedtrimmedavg"
    description = "coordinate-wise trimmed mean, Yin et al. 2018"
    defaults = {"beta": 0.2}

    def validate(self) -> None:
        if not 0.0 <= self.options["beta"] < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {self.options['beta']}")

    def aggregate(self, server_round, global_state, replies):
        return merge(global_state, trimmed_mean([r.arrays[STATE] for r in replies], self.options["beta"]))
