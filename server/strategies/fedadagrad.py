"""``fedadagrad``: v_t = v_{t-1} + Delta_t^2 (Reddi et al. 2021, Alg. 2).

Defaults follow Flower's FedAdagrad: eta 0.1 and beta_1 = 0 (no server momentum, as classical
Adagrad; Algorithm 2 allows any beta_1 in [0, 1)). ``beta_2`` does not enter the rule."""

from __future__ import annotations

from server.strategies.fedopt import FEDOPT_OPTIONS, ReddiFedOpt
from server.strategies.spec import StrategySpec, register_strategy


class FedAdagrad(ReddiFedOpt):
    """FedAdagrad as published (v_{-1} = tau^2)."""

    rule = "adagrad"


register_strategy(StrategySpec(
    "fedadagrad", FedAdagrad, {**FEDOPT_OPTIONS, "eta": 1e-1, "beta_1": 0.0}, False,
    "FedAdagrad, Reddi et al. 2021 Alg. 2 (ours; see fedopt.py)"))
