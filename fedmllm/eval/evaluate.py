"""Scoring a model on tasks: generate, parse with the task's parser, score with its metric."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from transformers import PreTrainedModel, ProcessorMixin

from fedmllm.data.record import Sample
from fedmllm.data.registry import TASKS
from fedmllm.eval.generate import generate


@dataclass
class TaskScore:
    """One task's result.

    Attributes:
        task: task name.
        metric: metric name (from the task).
        score: headline score in percent (CIDEr-D x 100 for captioning).
        scores: the metric's sub-scores (everything it returned besides ``score``).
        n: number of samples scored.
        predictions: parsed predictions, aligned with the samples (what the metric scored).
        raw: the generated texts before parsing.
        uids: sample ids, aligned with the predictions.
    """

    task: str
    metric: str
    score: float
    scores: dict[str, float]
    n: int
    predictions: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field."""
        return asdict(self)


def evaluate(model: PreTrainedModel, processor: ProcessorMixin,
             samples_by_task: Mapping[str, list[Sample]], *, batch_size: int = 32,
             generator: Optional[Callable[[list[Sample], int], list[str]]] = None) -> dict[str, TaskScore]:
    """Score ``model`` on each task's samples with the task's parser and metric.

    Decoding is greedy with ``max_new_tokens = task.max_new_tokens``; ``generator(samples,
    max_new_tokens)`` replaces the model's own decoding (e.g. proxy-tuning's combined logits). Metrics are corpus-level:
    each task's metric is computed once over all its samples (CIDEr-D needs the whole set).
    """
    import fedmllm.metrics  # noqa: F401  (registers the metrics)
    from fedmllm.metrics.base import METRICS

    results: dict[str, TaskScore] = {}
    for name, samples in samples_by_task.items():
        task = TASKS.get(name)
        metric = METRICS.get(task.metric)
        if not samples:
            raise ValueError(f"evaluate: task {name!r} has no samples")
        raw = generate(model, processor, samples, batch_size=batch_size, max_new_tokens=task.max_new_tokens) \
            if generator is None else generator(samples, task.max_new_tokens)
        parsed = [task.parse(text, s) for text, s in zip(raw, samples)]
        values = dict(metric.compute(parsed, samples))
        score = float(values.pop("score"))
        results[name] = TaskScore(
            task=name, metric=metric.name, score=score,
            scores={k: float(v) for k, v in values.items()}, n=len(samples),
            predictions=parsed, raw=raw, uids=[s.uid for s in samples],
        )
    return results


def write_scores(scores: Mapping[str, TaskScore], path: str | Path) -> Path:
    """Write ``{task: TaskScore fields}`` as indented JSON to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: v.to_dict() for k, v in scores.items()}, indent=2) + "\n")
    return path
