"""``fedtrimmedavg``: Flower's FedTrimmedAvg, coordinate-wise mean after cutting the ``beta``
fraction at both tails (Yin et al. 2018). Reused as is; unweighted, like the paper."""

from __future__ import annotations

from flwr.serverapp.strategy import FedTrimmedAvg as FlwrFedTrimmedAvg

from server.strategies.base import ValidatedReplies
from server.strategies.spec import StrategySpec, register_strategy


class FedTrimmedAvg(ValidatedReplies, FlwrFedTrimmedAvg):
    """Flower FedTrimmedAvg with checked, ordered, observed replies."""


register_strategy(StrategySpec("fedtrimmedavg", FedTrimmedAvg, {"beta": 0.2}, False,
                               "coordinate-wise trimmed mean, Yin et al. 2018 (Flower built-in)"))
