"""``fedavg``: FedAvg (McMahan et al. 2017, Alg. 1): w = sum_k (n_k / n) w_k.

Equal to Flower's ``FedAvg`` on random inputs (tests/test_algorithms.py; Flower sums in float32,
`aggregate.weighted_average` in float64).
"""

from __future__ import annotations

from fedmllm.federated.algorithms.base import Algorithm, register_algorithm


@register_algorithm
class FedAvg(Algorithm):
    """Example-weighted mean of the clients' states (the base class's defaults)."""

    name = "fedavg"
    description = "FedAvg, McMahan et al. 2017 Alg. 1"
    secure_aggregatable = True
