"""Specialization (E), stabilization/forgetting (F) and overall (O) of a tuned model.

Definitions (after Huang et al. 2025, arXiv 2503.04543; README "Metrics"), for a downstream (target)
dataset d, base model M0, model Md tuned on d, and scores S in percent:

    E_d = S(Md, d) - S(M0, d)                                  specialization improvement
    F_d = 1/|U| * sum over upstream u in U of [S(Md, u) - S(M0, u)]   negative = forgetting
    O_d = E_d + F_d                                            the paper's "O-Average" form

The per-upstream deltas are kept ("dF/<u>") so that other aggregations are one line away.

F is a mean of raw points, so an upstream task on a larger scale dominates it: CIDEr-D x 100 of a
caption task is ~650 while accuracies are <= 100. Two aggregations report forgetting that no one
task dominates, next to (never instead of) the paper's F:

    F_rel = 100/|U'| * sum over u in U' of [S(Md, u) - S(M0, u)] / S(M0, u),  U' = {u : S(M0, u) != 0}
            relative retention: percent of the base score gained (+) or lost (-); a task whose base
            score is 0 has no relative change and is left out (``F_rel_excluded`` names it)
    F_acc = 1/|A| * sum over u in A of [S(Md, u) - S(M0, u)],  A = the upstream tasks whose metric
            is an accuracy in [0, 100] (``ACCURACY_METRICS``; not CIDEr-D), decided by each task's
            metric name in the registries, never by the task's name

All functions are pure except `task_metrics`, which reads the task registry.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

# Metrics (names in `fedmllm.metrics.METRICS`) whose score is an accuracy in [0, 100]; these are
# the upstream tasks F_acc averages over. Every registered metric is in exactly one of the two
# sets (tests/test_efo.py checks it), so a new metric has to be classified here.
ACCURACY_METRICS = frozenset({"exact_match", "vqa_accuracy", "option_letter", "mme"})
# Not accuracies: CIDEr-D x 100 is unbounded above (the caption twins score ~650).
NON_ACCURACY_METRICS = frozenset({"cider_d"})


def specialization(tuned: float, base: float) -> float:
    """E = S(Md, d) - S(M0, d): the target-task gain of tuning, in points."""
    return float(tuned) - float(base)


def forgetting(tuned_up: dict[str, float], base_up: dict[str, float]) -> float:
    """F = mean over upstream u of S(Md, u) - S(M0, u) (negative means forgetting).

    Raises ``ValueError`` if the two dicts do not name the same upstream tasks, or name none.
    """
    _check_same(tuned_up, base_up, "forgetting")
    if not tuned_up:
        raise ValueError("forgetting: no upstream tasks to average over")
    return sum(float(tuned_up[u]) - float(base_up[u]) for u in tuned_up) / len(tuned_up)


def _check_same(tuned_up: Mapping[str, float], base_up: Mapping[str, float], who: str) -> None:
    if set(tuned_up) != set(base_up):
        raise ValueError(
            f"{who}: upstream tasks differ; only in tuned: {sorted(set(tuned_up) - set(base_up))}, "
            f"only in base: {sorted(set(base_up) - set(tuned_up))}"
        )


def relative_forgetting(tuned_up: Mapping[str, float],
                        base_up: Mapping[str, float]) -> tuple[Optional[float], list[str]]:
    """F_rel = 100/|U'| * sum over u in U' of (S(Md, u) - S(M0, u)) / S(M0, u), in percent.

    U' is every upstream task with a non-zero base score: a task with S(M0, u) = 0 has no
    relative change, so it is left out of the mean. Returns ``(F_rel, excluded)``, ``excluded``
    naming the left-out tasks in input order; ``F_rel`` is None when every task is left out.
    -10 means the tuned model keeps, on average, 90 % of the base model's upstream scores.
    Raises ``ValueError`` if the two dicts do not name the same tasks, or name none.
    """
    _check_same(tuned_up, base_up, "relative_forgetting")
    if not tuned_up:
        raise ValueError("relative_forgetting: no upstream tasks to average over")
    excluded = [u for u in tuned_up if float(base_up[u]) == 0.0]
    kept = [u for u in tuned_up if u not in excluded]
    if not kept:
        return None, excluded
    rel = [100.0 * (float(tuned_up[u]) - float(base_up[u])) / float(base_up[u]) for u in kept]
    return sum(rel) / len(rel), excluded


def forgetting_on(tuned_up: Mapping[str, float], base_up: Mapping[str, float],
                  tasks: Iterable[str]) -> Optional[float]:
    """F over a subset: 1/|T| * sum over u in T of S(Md, u) - S(M0, u), T = ``tasks``.

    None when ``tasks`` is empty (nothing to average; not 0, which would read as "no
    forgetting"). Raises ``ValueError`` if a task of ``tasks`` is missing from either dict.
    """
    tasks = list(tasks)
    missing = [u for u in tasks if u not in tuned_up or u not in base_up]
    if missing:
        raise ValueError(f"forgetting_on: task(s) {missing} missing from the tuned or base scores")
    if not tasks:
        return None
    return sum(float(tuned_up[u]) - float(base_up[u]) for u in tasks) / len(tasks)


def is_accuracy_metric(metric: Optional[str]) -> bool:
    """Whether a metric (by its registry name) scores an accuracy in [0, 100]; None (unknown) -> False."""
    return metric in ACCURACY_METRICS


def forgetting_summary(tuned_up: Mapping[str, float], base_up: Mapping[str, float],
                       metric_of: Mapping[str, Optional[str]]) -> dict:
    """The paper's F and the two alternatives, with the tasks each one left out.

    ``metric_of`` maps each upstream task to its metric name (None if unknown; see
    `task_metrics`). Returns ``F``, ``F_rel`` (percent; None if every base score is 0),
    ``F_rel_excluded`` (tasks with base score 0), ``F_acc`` (points; None if no upstream task is
    an accuracy), ``F_acc_tasks`` (the accuracy tasks averaged) and ``F_acc_excluded`` (the rest).
    """
    f_rel, rel_excluded = relative_forgetting(tuned_up, base_up)
    acc = [u for u in tuned_up if is_accuracy_metric(metric_of.get(u))]
    return {
        "F": forgetting(tuned_up, base_up), "F_rel": f_rel, "F_rel_excluded": rel_excluded,
        "F_acc": forgetting_on(tuned_up, base_up, acc), "F_acc_tasks": acc,
        "F_acc_excluded": [u for u in tuned_up if u not in acc],
    }


def task_metrics(tasks: Iterable[str]) -> dict[str, Optional[str]]:
    """Each task's metric name from the registries (``TASKS.get(t).metric``, checked against
    ``METRICS``); None for a task (or metric) the registries do not know, e.g. an old run's
    renamed task, which then counts as no accuracy."""
    from fedmllm.data.registry import TASKS
    from fedmllm.metrics.base import METRICS

    out: dict[str, Optional[str]] = {}
    for t in tasks:
        metric = TASKS.get(t).metric if t in TASKS else None
        out[t] = metric if metric in METRICS else None
    return out


def _require(scores: dict[str, float], tasks: Iterable[str], which: str) -> None:
    missing = [t for t in tasks if t not in scores]
    if missing:
        raise ValueError(
            f"efo: {which} scores lack task(s) {missing}; have {sorted(scores)}"
        )


def efo(base_scores: dict[str, float], tuned_scores: dict[str, float], target: str,
        upstream: list[str]) -> dict[str, float]:
    """E, F, O of a model tuned on ``target``, plus ``dF/<u>`` = S(Md, u) - S(M0, u) per upstream.

    ``base_scores`` / ``tuned_scores`` map task names to scores (percent) of M0 and Md. Extra
    tasks in them are ignored. Raises ``ValueError`` if a needed task is missing from either,
    if ``upstream`` is empty or repeats a task, or if it contains the target.
    """
    upstream = list(upstream)
    if not upstream:
        raise ValueError("efo: no upstream tasks given")
    if len(set(upstream)) != len(upstream):
        raise ValueError(f"efo: upstream tasks repeat: {upstream}")
    if target in upstream:
        raise ValueError(f"efo: target {target!r} is also listed as upstream")
    needed = [target, *upstream]
    _require(base_scores, needed, "base")
    _require(tuned_scores, needed, "tuned")
    e = specialization(tuned_scores[target], base_scores[target])
    f = forgetting({u: tuned_scores[u] for u in upstream}, {u: base_scores[u] for u in upstream})
    out = {"E": e, "F": f, "O": e + f}
    for u in upstream:
        out[f"dF/{u}"] = float(tuned_scores[u]) - float(base_scores[u])
    return out
