"""``fedyogi``: v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2)
(Reddi et al. 2021, Alg. 2)."""

from __future__ import annotations

from server.strategies.fedopt import FEDOPT_OPTIONS, ReddiFedOpt
from server.strategies.spec import StrategySpec, register_strategy


class FedYogi(ReddiFedOpt):
    """FedYogi as published (v_{-1} = tau^2)."""

    rule = "yogi"


register_strategy(StrategySpec("fedyogi", FedYogi, dict(FEDOPT_OPTIONS), False,
                               "FedYogi, Reddi et al. 2021 Alg. 2 (ours; see fedopt.py)"))
