"""MME (Fu et al. 2023, "MME: A Comprehensive Evaluation Benchmark for MLLMs").

Every image comes with two yes/no questions (a pair). Per category c:

    acc_c   = 100 * correct questions / questions
    acc+_c  = 100 * pairs with every question correct / pairs

The official total is the sum over categories of acc_c + acc+_c (perception: 10 categories, max
2000; cognition: 4 categories, max 800). ``score`` puts that on the 0-100 scale of the other
metrics: the mean over categories of (acc_c + acc+_c) / 2. Samples carry ``meta["category"]`` and
``meta["pair"]`` (pair ids are scoped to their category). Needs the whole set (pairs), so its
aggregation is "corpus".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional

from fedmllm.data.record import Sample
from fedmllm.metrics.base import Metric, register_metric
from fedmllm.metrics.normalize import check_aligned, normalize_answer

# Official MME cognition categories; every other category counts as perception.
COGNITION = frozenset({
    "commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning",
})


def parse_yes_no(text: str) -> Optional[str]:
    """``"yes"`` or ``"no"`` if the first word of the normalized text is one, else None."""
    words = normalize_answer(text).split()
    return words[0] if words and words[0] in ("yes", "no") else None


def _meta(sample: Sample, key: str) -> str:
    if key not in sample.meta:
        raise ValueError(f"mme: sample {sample.uid!r} has no meta[{key!r}]")
    return str(sample.meta[key])


def compute(predictions: list[str], samples: list[Sample]) -> dict[str, float]:
    """``score`` (0-100), ``perception`` / ``cognition`` (official sums), ``acc``/``acc_plus``
    (means over categories) and ``acc/<cat>``, ``acc_plus/<cat>`` per category."""
    check_aligned(predictions, samples, "mme")
    questions: dict[str, list[bool]] = defaultdict(list)
    pairs: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for pred, sample in zip(predictions, samples):
        category, pair = _meta(sample, "category"), _meta(sample, "pair")
        if not sample.answers:
            raise ValueError(f"mme: sample {sample.uid!r} has no reference answer")
        gold = parse_yes_no(sample.answers[0])
        if gold is None:
            raise ValueError(f"mme: sample {sample.uid!r}: reference {sample.answers[0]!r} "
                             "is not yes/no")
        right = parse_yes_no(pred) == gold
        questions[category].append(right)
        pairs[category][pair].append(right)
    out: dict[str, float] = {}
    totals = {}
    for category in sorted(questions):
        acc = 100.0 * sum(questions[category]) / len(questions[category])
        per_pair = [all(p) for p in pairs[category].values()]
        acc_plus = 100.0 * sum(per_pair) / len(per_pair)
        out[f"acc/{category}"], out[f"acc_plus/{category}"] = acc, acc_plus
        totals[category] = acc + acc_plus
    n_cat = len(totals)
    out["score"] = sum(totals.values()) / (2 * n_cat)
    out["acc"] = sum(out[f"acc/{c}"] for c in totals) / n_cat
    out["acc_plus"] = sum(out[f"acc_plus/{c}"] for c in totals) / n_cat
    out["perception"] = sum(t for c, t in totals.items() if c not in COGNITION)
    if any(c in COGNITION for c in totals):
        out["cognition"] = sum(t for c, t in totals.items() if c in COGNITION)
    return out


METRIC = register_metric(Metric(
    name="mme",
    higher_is_better=True,
    compute=compute,
    aggregation="corpus",
    description="MME acc and acc+ per category; score = mean of (acc + acc+)/2, percent",
))
