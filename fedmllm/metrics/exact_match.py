"""Normalized exact match against any reference (GQA, OCR-VQA, PathVQA, ...)."""

from __future__ import annotations

from fedmllm.data.record import Sample
from fedmllm.metrics.base import Metric, register_metric
from fedmllm.metrics.normalize import check_aligned, normalize_answer


def exact_match_score(prediction: str, references: list[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0.

    An empty (normalized) prediction never matches, even a reference that normalizes to "".
    """
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0
    return float(any(pred == normalize_answer(ref) for ref in references))


def compute(predictions: list[str], samples: list[Sample]) -> dict[str, float]:
    """``score``: percent of predictions matching a reference after `normalize_answer`."""
    check_aligned(predictions, samples, "exact_match")
    hits = [exact_match_score(p, s.answers) for p, s in zip(predictions, samples)]
    return {"score": 100.0 * sum(hits) / len(hits)}


METRIC = register_metric(Metric(
    name="exact_match",
    higher_is_better=True,
    compute=compute,
    aggregation="mean",
    description="normalized exact match (VQA normalizer) against any reference, percent",
))
