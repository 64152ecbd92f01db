"""Side-by-side comparison of several run directories (``fedmllm report RUN1 RUN2 ...``)."""

from __future__ import annotations

import json
from pathlib import Path

from fedmllm.runs import atomic_write


def _summary_rows(run_dir: Path) -> list[tuple[str, str, float, float, float, int]]:
    """(label, detail, mean E, mean F, mean O, n) rows of one run, from its result files."""
    results = run_dir / "results.json"
    if not results.is_file():
        return []
    data = json.loads(results.read_text())
    rows: dict[tuple[str, str], list[dict]] = {}
    for c in data.get("cells", []):
        rows.setdefault((c["model"], c["method"]), []).append(c)
    for entry in data.get("systems", []):  # federated runs: one entry per system (strategy/baseline)
        rows.setdefault((entry.get("model", ""), entry["system"]), []).append(entry)
    out = []
    for (model, what), cs in rows.items():
        mean = lambda k: sum(c[k] for c in cs) / len(cs)  # noqa: E731
        out.append((model, what, mean("E"), mean("F"), mean("O"), len(cs)))
    return out


def build_comparison(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``compare.md``: mean E / F / O per (run, model, method or system)."""
    lines = ["# Run comparison", "", "| run | model | method / system | mean E | mean F | mean O | cells |",
             "|---|---|---|---|---|---|---|"]
    for d in run_dirs:
        for model, what, e, f, o, n in _summary_rows(d):
            lines.append(f"| {d.name} | {model} | {what} | {e:+.1f} | {f:+.1f} | {o:+.1f} | {n} |")
    path = out_dir / "compare.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path
