"""``fedprox``: Flower's FedProx (Li et al. 2020). Server side is FedAvg; ``configure_train``
adds ``"proximal-mu"`` (`protocol.PROXIMAL_MU`) to the train config and clients add
(mu / 2) ||w - w_global||^2 to their loss."""

from __future__ import annotations

from flwr.serverapp.strategy import FedProx as FlwrFedProx

from server.strategies.base import ValidatedReplies
from server.strategies.spec import StrategySpec, register_strategy


class FedProx(ValidatedReplies, FlwrFedProx):
    """Flower FedProx with checked, ordered, observed replies."""

    def __init__(self, *, proximal_mu: float, **kwargs):
        if proximal_mu < 0:
            raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}")
        super().__init__(proximal_mu=float(proximal_mu), **kwargs)


register_strategy(StrategySpec("fedprox", FedProx, {"proximal_mu": 0.01}, False,
                               "FedProx, Li et al. 2020 (Flower built-in)"))
