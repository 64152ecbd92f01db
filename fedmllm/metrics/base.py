"""The metric description shared by every metric in the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fedmllm.data.record import Sample
from fedmllm.registry import Registry

# compute(predictions, samples) -> {"score": percent, ...sub-scores}; predictions are already
# parsed by the task's parser and aligned with samples. Corpus-level: called once on the whole set.
ComputeFn = Callable[[list[str], list[Sample]], dict[str, float]]


@dataclass(frozen=True)
class Metric:
    """A scoring rule. ``score`` is in percent (0–100; CIDEr-D × 100 for captioning)."""

    name: str
    higher_is_better: bool
    compute: ComputeFn
    aggregation: str = "mean"  # "mean": per-sample mean; "corpus": needs the whole set (CIDEr)
    description: str = ""


METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    return METRICS.register(metric.name, metric)
