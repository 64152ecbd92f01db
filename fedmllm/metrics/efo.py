"""Specialization (E), stabilization/forgetting (F) and overall (O) of a tuned model.

Definitions (after Huang et al. 2025, arXiv 2503.04543; README "Metrics"), for a downstream (target)
dataset d, base model M0, model Md tuned on d, and scores S in percent:

    E_d = S(Md, d) - S(M0, d)                                  specialization improvement
    F_d = 1/|U| * sum over upstream u in U of [S(Md, u) - S(M0, u)]   negative = forgetting
    O_d = E_d + F_d                                            the paper's "O-Average" form

The per-upstream deltas are kept ("dF/<u>") so that other aggregations are one line away.
All functions are pure.
"""

from __future__ import annotations

from typing import Iterable


def specialization(tuned: float, base: float) -> float:
    """E = S(Md, d) - S(M0, d): the target-task gain of tuning, in points."""
    return float(tuned) - float(base)


def forgetting(tuned_up: dict[str, float], base_up: dict[str, float]) -> float:
    """F = mean over upstream u of S(Md, u) - S(M0, u) (negative means forgetting).

    Raises ``ValueError`` if the two dicts do not name the same upstream tasks, or name none.
    """
    if set(tuned_up) != set(base_up):
        only_tuned = sorted(set(tuned_up) - set(base_up))
        only_base = sorted(set(base_up) - set(tuned_up))
        raise ValueError(
            f"forgetting: upstream tasks differ; only in tuned: {only_tuned}, "
            f"only in base: {only_base}"
        )
    if not tuned_up:
        raise ValueError("forgetting: no upstream tasks to average over")
    return sum(float(tuned_up[u]) - float(base_up[u]) for u in tuned_up) / len(tuned_up)


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
