"""The paper's F and the two alternatives (F_rel, F_acc) as the reports show them.

Runs written before F_rel / F_acc existed lack those keys; `with_variants` computes them from the
per-upstream scores the run stored (centralized cells: ``upstream_tuned`` / ``upstream_base``;
federated systems: ``upstream`` against the zero-shot ``upstream``), and leaves them None (shown
as "–") where those scores are not there. Definitions: `fedmllm.metrics.efo`.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional

from fedmllm.metrics.efo import forgetting_summary, task_metrics

ALT_KEYS = ("F_rel", "F_rel_excluded", "F_acc", "F_acc_tasks", "F_acc_excluded")
# (key, what it is, unit) of the three forgetting measures, in report order.
MEASURES = (("F", "the paper's F", "points"), ("F_rel", "relative retention", "%"),
            ("F_acc", "accuracy tasks only", "points"))


# The one-line reminder under rankings and summaries (the full lines: `definitions`).
SHORT_DEFINITIONS = ("- F: the paper's, mean upstream change S(tuned, u) − S(base, u) in points; "
                     "F_rel: mean relative upstream change, % of the base score (base 0 left out); "
                     "F_acc: F over the accuracy-metric upstream tasks only (no CIDEr-D).")


def with_variants(entry: dict, tuned_up: Optional[Mapping[str, float]],
                  base_up: Optional[Mapping[str, float]]) -> dict:
    """``entry`` with F_rel / F_acc (and the tasks they leave out) filled in where missing.

    Keys already present are kept as stored. Missing ones are computed from ``tuned_up`` /
    ``base_up`` when both are there and cover the same tasks, else set to None.
    """
    if all(k in entry for k in ALT_KEYS):
        return entry
    out = dict(entry)
    if tuned_up and base_up and set(tuned_up) <= set(base_up):
        fs = forgetting_summary(tuned_up, {u: base_up[u] for u in tuned_up}, task_metrics(tuned_up))
    else:
        fs = dict.fromkeys(ALT_KEYS)
    for k in ALT_KEYS:
        out.setdefault(k, fs[k])
    return out


def cell_variants(cell: dict) -> dict:
    """A centralized cell with F_rel / F_acc (computed from its stored upstream scores if absent)."""
    return with_variants(cell, cell.get("upstream_tuned"), cell.get("upstream_base"))


def system_variants(system: dict, zero_upstream: Optional[Mapping[str, float]]) -> dict:
    """A federated system with F_rel / F_acc (computed against the zero-shot upstream if absent)."""
    return with_variants(system, system.get("upstream"), zero_upstream)


def fmt(value: Optional[float], spec: str = "+.1f") -> str:
    """``value`` formatted, or "–" for None / NaN (a measure that is not defined or not stored)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def mean_of(values: Iterable[Optional[float]]) -> Optional[float]:
    """Mean of the defined values; None if there are none."""
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _union(entries: list[dict], key: str) -> list[str]:
    return list(dict.fromkeys(t for e in entries for t in (e.get(key) or [])))


def definitions(entries: list[dict], prefix: str = "") -> str:
    """One line per forgetting measure, naming the tasks each one leaves out in these entries.

    ``prefix`` (e.g. "mean ") is put before each key, for tables that average over cells.
    """
    rel_out = _union(entries, "F_rel_excluded")
    acc_in, acc_out = _union(entries, "F_acc_tasks"), _union(entries, "F_acc_excluded")
    metric = task_metrics(acc_out)
    unknown = all(e.get("F_acc_tasks") is None for e in entries)
    lines = [
        f"- **{prefix}F** (the paper's): mean over upstream u of S(tuned, u) − S(base, u), in points "
        "(negative = forgetting); large-scale metrics (CIDEr-D × 100, ~650) weigh most.",
        f"- **{prefix}F_rel** (relative retention): mean over upstream u of (S(tuned, u) − S(base, u)) / "
        "S(base, u) × 100, in percent of the base score (−10 = 90 % kept); left out (base score 0): "
        + (", ".join(rel_out) if rel_out else "none") + ".",
        f"- **{prefix}F_acc** (accuracy tasks only): F over the upstream tasks whose metric is an "
        "accuracy in [0, 100], in points; "
        + ("not stored and not computable for this run." if unknown else
           "over: " + (", ".join(acc_in) or "none") + "; left out: "
           + (", ".join(f"{t} ({metric[t] or 'unknown metric'})" for t in acc_out) or "none") + "."),
    ]
    return "\n".join(lines)
