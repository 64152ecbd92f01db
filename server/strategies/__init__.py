"""Aggregation strategies: thin subclasses of Flower's Message-API strategies, one file each.

`STRATEGIES` maps names to `StrategySpec`; `build_strategy(name, options, **common)` builds one.
The update rules live in `fedmllm.federated.aggregate`; message keys in
`fedmllm.federated.protocol`.
"""

from __future__ import annotations

from server.strategies.spec import (
    COMMON_OPTIONS, STRATEGIES, StrategySpec, build_strategy, register_strategy)

# Registrations (one file per strategy).
from server.strategies import (  # noqa: E402,F401,I001
    fedadagrad, fedadam, fedavg, fedavgm, fedmedian, fedprox, fedtrimmedavg, fedyogi, krum,
    scaffold)

__all__ = ["COMMON_OPTIONS", "STRATEGIES", "StrategySpec", "build_strategy", "register_strategy"]
