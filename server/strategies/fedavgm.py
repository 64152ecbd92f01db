"""``fedavgm``: Flower's FedAvgM (Hsu et al. 2019): v <- beta v + (x - avg); x <- x - lr v.

Flower's update equals `fedmllm.federated.aggregate.fedavgm` (checked over three rounds in
tests/test_strategies.py), so it is reused. Our default momentum is Hsu et al.'s 0.9 (Flower's
default 0.0 would make it plain FedAvg). OpenFedLLM's "fedavgm" differs: it keeps an
exponential average m = beta m + (1 - beta) Delta and adds it without a server learning rate.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvgM as FlwrFedAvgM

from server.strategies.base import ValidatedReplies
from server.strategies.spec import StrategySpec, register_strategy


class FedAvgM(ValidatedReplies, FlwrFedAvgM):
    """Flower FedAvgM with checked, ordered, observed replies."""

    def __init__(self, *, server_learning_rate: float, server_momentum: float, **kwargs):
        if server_learning_rate <= 0 or not 0.0 <= server_momentum < 1.0:
            raise ValueError("need server_learning_rate > 0 and 0 <= server_momentum < 1, got "
                             f"{server_learning_rate}, {server_momentum}")
        super().__init__(server_learning_rate=float(server_learning_rate),
                         server_momentum=float(server_momentum), **kwargs)


register_strategy(StrategySpec(
    "fedavgm", FedAvgM, {"server_learning_rate": 1.0, "server_momentum": 0.9}, False,
    "FedAvg with server momentum, Hsu et al. 2019 (Flower built-in)"))
