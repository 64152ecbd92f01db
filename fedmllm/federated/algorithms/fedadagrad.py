"""``fedadagrad``: v_t = v_{t-1} + Delta_t^2 (Reddi et al. 2021, Alg. 2); v_{-1} = tau^2.

Defaults follow Flower's FedAdagrad: eta 0.1 and beta_1 = 0 (no server momentum, as classical
Adagrad; Algorithm 2 allows any beta_1 in [0, 1)). ``beta_2`` does not enter the rule."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import register_algorithm
from fedmllm.federated.algorithms.fedopt import FEDOPT_DEFAULTS, ReddiFedOpt


@register_algorithm
class FedAdagrad(ReddiFedOpt):
    """FedAdagrad as published."""

    name = "fedadagrad"
    description = "FedAdagrad, Reddi et al. 2021 Alg. 2"
    defaults = {**FEDOPT_DEFAULTS, "eta": 1e-1, "beta_1": 0.0}
    rule = "adagrad"
