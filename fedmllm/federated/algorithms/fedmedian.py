"""``fedmedian``: coordinate-wise median (Yin et al. 2018), `robust.coordinate_median`; equal to
Flower's ``FedMedian`` (tests/test_robust.py)."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import STATE, Algorithm, merge, register_algorithm
from fedmllm.federated.robust import coordinate_median


@register_algorithm
class FedMedian(Algorithm):
    """Unweighted coordinate-wise median of the client states."""

    name = "fedmedian"
    description = "coordinate-wise median, Yin et al. 2018"

    def aggregate(self, server_round, global_state, replies):
        return merge(global_state, coordinate_median([r.arrays[STATE] for r in replies]))
