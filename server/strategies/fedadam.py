"""``fedadam``: v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2 (Reddi et al. 2021, Alg. 2)."""

from __future__ import annotations

from server.strategies.fedopt import FEDOPT_OPTIONS, ReddiFedOpt
from server.strategies.spec import StrategySpec, register_strategy


class FedAdam(ReddiFedOpt):
    """FedAdam as published (no bias correction, v_{-1} = tau^2)."""

    rule = "adam"


register_strategy(StrategySpec("fedadam", FedAdam, dict(FEDOPT_OPTIONS), False,
                               "FedAdam, Reddi et al. 2021 Alg. 2 (ours; see fedopt.py)"))
