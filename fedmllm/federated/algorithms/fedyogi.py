"""``fedyogi``: v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2)
(Reddi et al. 2021, Alg. 2); v_{-1} = tau^2 (see fedopt.py)."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import register_algorithm
from fedmllm.federated.algorithms.fedopt import ReddiFedOpt


@register_algorithm
class FedYogi(ReddiFedOpt):
    """FedYogi as published."""

    name = "fedyogi"
    description = "FedYogi, Reddi et al. 2021 Alg. 2"
    rule = "yogi"
