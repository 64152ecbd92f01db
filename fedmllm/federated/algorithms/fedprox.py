"""``fedprox``: FedProx (Li et al. 2020, Eq. 2). Server side is FedAvg; clients add
(mu / 2) ||w - w_global||^2 to their loss (`fedmllm.training.hooks.ProximalTerm`). The coefficient
travels under ``proximal-mu``, the key Flower's FedProx writes."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import GLOBAL, Algorithm, as_tensors, register_algorithm
from fedmllm.training.hooks import ProximalTerm

PROXIMAL_MU = "proximal-mu"


@register_algorithm
class FedProx(Algorithm):
    """FedAvg plus a proximal term on every client."""

    name = "fedprox"
    description = "FedProx, Li et al. 2020 Eq. 2"
    secure_aggregatable = True
    defaults = {"proximal_mu": 0.01}

    def validate(self) -> None:
        if self.options["proximal_mu"] < 0:
            raise ValueError(f"proximal_mu must be >= 0, got {self.options['proximal_mu']}")

    def client_config(self, server_round):
        return {PROXIMAL_MU: float(self.options["proximal_mu"])}

    def hooks(self, payload, local_state, method, state):
        mu = float(payload.config[PROXIMAL_MU])
        if mu == 0:
            return []
        return [ProximalTerm(mu, as_tensors(payload.arrays[GLOBAL]), method)]

