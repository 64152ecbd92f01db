"""The strategy registry entry type and the common factory `build_strategy`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from flwr.serverapp.strategy import Strategy

from fedmllm.errors import UserError
from fedmllm.registry import Registry
from server.strategies.base import aggregate_metrics

# Keyword arguments every registered strategy accepts (Flower's FedAvg ones, the observers).
COMMON_OPTIONS = (
    "fraction_train", "fraction_evaluate", "min_train_nodes", "min_evaluate_nodes",
    "min_available_nodes", "weighted_by_key", "train_metrics_aggr_fn",
    "evaluate_metrics_aggr_fn", "train_observer", "evaluate_observer",
)


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy.

    Attributes:
        name: registry name.
        cls: the strategy class (a thin subclass of a Flower Message-API strategy).
        options: the strategy's own options, name -> default (the constructor's keywords).
        handles_non_averageable: True when the new global state is one client's state unchanged
            (selection, e.g. Krum), so state that must not be mixed across clients (AdaLoRA rank
            masks, integer buffers) survives aggregation. False for every averaging rule,
            including the coordinate-wise median and trimmed mean.
        description: one line with the source.
    """

    name: str
    cls: type
    options: dict[str, Any]
    handles_non_averageable: bool
    description: str


STRATEGIES: Registry[StrategySpec] = Registry("strategy")


def register_strategy(spec: StrategySpec) -> StrategySpec:
    """Register ``spec`` under ``spec.name`` (a duplicate name raises)."""
    return STRATEGIES.register(spec.name, spec)


def _check_type(strategy: str, key: str, value: Any, default: Any) -> None:
    if default is None:
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UserError(f"strategy {strategy!r} option {key!r} must be like {default!r}, "
                        f"got {value!r}")


def build_strategy(name: str, options: Optional[Mapping[str, Any]] = None,
                   **common: Any) -> Strategy:
    """Build the registered strategy ``name``.

    ``options`` are the strategy's own (see ``STRATEGIES.get(name).options``); ``common`` are
    `COMMON_OPTIONS` shared by all. Metrics aggregate with `aggregate_metrics` unless given.
    Unknown or ill-typed options and out-of-range values raise `UserError`.
    """
    spec = STRATEGIES.get(name)
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(spec.options))
    if unknown:
        valid = ", ".join(sorted(spec.options)) or "(none)"
        raise UserError(f"unknown option(s) {', '.join(unknown)} for strategy {name!r}; "
                        f"valid: {valid}")
    bad_common = sorted(set(common) - set(COMMON_OPTIONS))
    if bad_common:
        raise UserError(f"unknown common strategy option(s) {', '.join(bad_common)}; "
                        f"valid: {', '.join(COMMON_OPTIONS)}")
    for key, value in opts.items():
        _check_type(name, key, value, spec.options[key])
    common.setdefault("train_metrics_aggr_fn", aggregate_metrics)
    common.setdefault("evaluate_metrics_aggr_fn", aggregate_metrics)
    try:
        return spec.cls(**common, **{**spec.options, **opts})
    except ValueError as e:  # range checks in the constructors
        raise UserError(f"strategy {name!r}: {e}") from e
