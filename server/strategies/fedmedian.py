"""``fedmedian``: Flower's FedMedian, coordinate-wise median (Yin et al. 2018). Reused as is."""

from __future__ import annotations

from flwr.serverapp.strategy import FedMedian as FlwrFedMedian

from server.strategies.base import ValidatedReplies
from server.strategies.spec import StrategySpec, register_strategy


class FedMedian(ValidatedReplies, FlwrFedMedian):
    """Flower FedMedian with checked, ordered, observed replies."""


register_strategy(StrategySpec("fedmedian", FedMedian, {}, False,
                               "coordinate-wise median, Yin et al. 2018 (Flower built-in)"))
