"""``krum``: Flower's Krum (Blanchard et al. 2017): the new global state is the one client state
with the smallest sum of squared distances to its n - f - 2 nearest others. Reused as is.

Selection, not averaging, so it can carry non-averageable state (Flower multiplies the chosen
arrays by the weight 1.0, so integer arrays come back as float64)."""

from __future__ import annotations

from flwr.serverapp.strategy import Krum as FlwrKrum

from server.strategies.base import ValidatedReplies
from server.strategies.spec import StrategySpec, register_strategy


class Krum(ValidatedReplies, FlwrKrum):
    """Flower Krum with checked, ordered, observed replies."""

    def __init__(self, *, num_malicious_nodes: int, **kwargs):
        if num_malicious_nodes < 0:
            raise ValueError(f"num_malicious_nodes must be >= 0, got {num_malicious_nodes}")
        super().__init__(num_malicious_nodes=num_malicious_nodes, **kwargs)


register_strategy(StrategySpec("krum", Krum, {"num_malicious_nodes": 0}, True,
                               "Krum, Blanchard et al. 2017 (Flower built-in)"))
