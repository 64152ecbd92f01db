"""``fedadam``: v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2 (Reddi et al. 2021, Alg. 2); no bias
correction, v_{-1} = tau^2 (see fedopt.py)."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import register_algorithm
from fedmllm.federated.algorithms.fedopt import ReddiFedOpt


@register_algorithm
class FedAdam(ReddiFedOpt):
    """FedAdam as published."""

    name = "fedadam"
    description = "FedAdam, Reddi et al. 2021 Alg. 2"
    rule = "adam"
