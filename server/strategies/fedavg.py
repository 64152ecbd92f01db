"""``fedavg``: Flower's FedAvg (McMahan et al. 2017), example-weighted mean of client states.

Flower's ``aggregate_arrayrecords`` computes exactly `fedmllm.federated.aggregate.weighted_average`
(checked in tests/test_strategies.py); reused unchanged.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg as FlwrFedAvg

from server.strategies.base import ValidatedReplies
from server.strategies.spec import StrategySpec, register_strategy


class FedAvg(ValidatedReplies, FlwrFedAvg):
    """Flower FedAvg with checked, ordered, observed replies."""


register_strategy(StrategySpec("fedavg", FedAvg, {}, False,
                               "FedAvg, McMahan et al. 2017 (Flower built-in)"))
