"""The chance / majority floors as the reports show them, read from ``<run>/floors.json``.

The floors are computed during the run (`fedmllm.eval.floors`); a report only reads them. A run
from before floors.json reports without them and says so (`NOT_RECORDED`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Optional

BELOW = "↓"
NOT_RECORDED = "Floors: not recorded (a run from before `floors.json`); no chance or majority baseline shown."
Floors = Mapping[str, Mapping]


def read_floors(run_dir: Path) -> Optional[dict[str, dict]]:
    """``{task: floors}`` of a run directory, or None when the run did not record them."""
    from fedmllm.runs import read_json

    path = Path(run_dir) / "floors.json"
    return read_json(path) if path.is_file() else None


def chance_of(floors: Optional[Floors], task: str) -> Optional[float]:
    return ((floors or {}).get(task) or {}).get("chance")


def mark(score: Optional[float], floors: Optional[Floors], task: str) -> str:
    """``BELOW`` when ``score`` is below the task's chance floor, else ""."""
    chance = chance_of(floors, task)
    return BELOW if score is not None and chance is not None and score < chance - 1e-9 else ""


def floor_cell(floors: Optional[Floors], task: str) -> str:
    """"chance / majority" of one task ("–" for a floor that is not defined or not recorded)."""
    f = (floors or {}).get(task)
    if not f:
        return "–"
    return " / ".join("–" if f.get(k) is None else f"{f[k]:.1f}" for k in ("chance", "majority"))


def floors_row(floors: Optional[Floors], tasks: Iterable[str]) -> list[str]:
    """One "chance / majority" cell per task."""
    return [floor_cell(floors, t) for t in tasks]


def legend(floors: Optional[Floors], tasks: Iterable[str]) -> str:
    """The line under a table with floors: what the floors are, what ``BELOW`` means, the majority
    answers; `NOT_RECORDED` for an old run."""
    tasks = list(tasks)
    if floors is None:
        return NOT_RECORDED
    untrained = " (from the evaluated set: no training split)"
    answers = ", ".join(f"{t} \"{floors[t]['majority_answer']}\"" + untrained * (floors[t].get("majority_from") == "test")
                        for t in tasks if t in floors)
    missing = [t for t in tasks if t not in floors]
    return ("Floors (*chance / majority*, same metric and samples): chance = expected score of a uniform random "
            "answer (an item's options, or the answers of its question type); majority = always giving the most "
            f"frequent training answer ({answers or 'none'}). {BELOW} = below chance."
            + (f" No floors recorded for: {', '.join(missing)}." if missing else ""))


def mean_floor(floors: Optional[Floors], tasks: Iterable[str], key: str) -> Optional[float]:
    """Mean of ``key`` ("chance" / "majority") over ``tasks``; None unless every task has it."""
    vals = [((floors or {}).get(t) or {}).get(key) for t in tasks]
    return sum(vals) / len(vals) if vals and all(v is not None for v in vals) else None
