"""VQA accuracy (Antol et al. 2015; official ``vqaEval.py``) for 10-answer sets (OKVQA, TextVQA).

For a prediction and k references, every leave-one-out subset of k-1 references scores
min(1, #matches / 3); the accuracy is the mean over the k subsets. With m of 10 annotators
agreeing: [(10 - m) * min(1, m/3) + m * min(1, (m-1)/3)] / 10 = 0.3, 0.6, 0.9, 1.0 for m = 1..4.
With a single reference the formula is always 0, so that case falls back to normalized exact match
(DESIGN.md).
"""

from __future__ import annotations

from fedmllm.data.record import Sample
from fedmllm.metrics.base import Metric, register_metric
from fedmllm.metrics.normalize import check_aligned, normalize_answer


def vqa_score(prediction: str, references: list[str], style: str = "vqa") -> float:
    """VQA accuracy of one prediction in [0, 1]; both sides normalized by `normalize_answer`
    (``style="vqa"``: the official normalizer; ``"lmms-eval"``: lmms-eval's EvalAI processor).

    An empty (normalized) prediction scores 0. Unlike the official script, references are always
    normalized (it normalizes them only when they disagree), as lmms-eval does.
    """
    if not references:
        raise ValueError("vqa_accuracy: a sample has no reference answers")
    pred = normalize_answer(prediction, style)
    if not pred:
        return 0.0
    matches = [pred == normalize_answer(ref, style) for ref in references]
    if len(references) == 1:
        return float(matches[0])
    total = sum(matches)
    # Leaving out reference i removes one match if reference i matched. Summing min(3, matches)
    # as integers and dividing once keeps the result exact (m = 1 gives 9/30 == 0.3).
    thirds = sum(min(3, total - int(hit)) for hit in matches)
    return thirds / (3 * len(matches))


def compute(predictions: list[str], samples: list[Sample]) -> dict[str, float]:
    """``score``: mean VQA accuracy in percent."""
    check_aligned(predictions, samples, "vqa_accuracy")
    scores = [vqa_score(p, s.answers) for p, s in zip(predictions, samples)]
    return {"score": 100.0 * sum(scores) / len(scores)}


METRIC = register_metric(Metric(
    name="vqa_accuracy",
    higher_is_better=True,
    compute=compute,
    aggregation="mean",
    description="VQA 10-answer accuracy, min(1, matches/3) over leave-one-out subsets, percent",
))
