"""Side-by-side comparison of several run directories (``fedmllm report RUN1 RUN2 ...``)."""

from __future__ import annotations

from pathlib import Path

from fedmllm.report.forgetting import SHORT_DEFINITIONS, cell_variants, fmt, mean_of, system_variants
from fedmllm.runs import atomic_write, read_json


def _summary_rows(run_dir: Path) -> list[tuple]:
    """(model, method or system, mean E, mean F, mean O, mean F_rel, mean F_acc, n) rows of one
    run, from its result files (F_rel / F_acc computed from stored scores for older runs)."""
    results = run_dir / "results.json"
    if not results.is_file():
        return []
    data = read_json(results)
    rows: dict[tuple[str, str], list[dict]] = {}
    for c in data.get("cells", []):
        rows.setdefault((c["model"], c["method"]), []).append(cell_variants(c))
    zero_up = (data.get("zero_shot") or {}).get("upstream")
    for entry in data.get("systems", []):  # federated runs: one entry per system (strategy/baseline)
        rows.setdefault((entry.get("model", ""), entry["system"]), []).append(system_variants(entry, zero_up))
    out = []
    for (model, what), cs in rows.items():
        mean = lambda k: sum(c[k] for c in cs) / len(cs)  # noqa: E731
        out.append((model, what, mean("E"), mean("F"), mean("O"), mean_of(c.get("F_rel") for c in cs),
                    mean_of(c.get("F_acc") for c in cs), len(cs)))
    return out


def build_comparison(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``compare.md``: mean E / F / O / F_rel / F_acc per (run, model, method or system)."""
    lines = ["# Run comparison", "",
             "| run | model | method / system | mean E | mean F | mean O | mean F_rel (%) | mean F_acc | cells |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d in run_dirs:
        for model, what, e, f, o, f_rel, f_acc, n in _summary_rows(d):
            lines.append(f"| {d.name} | {model} | {what} | {e:+.1f} | {f:+.1f} | {o:+.1f} | {fmt(f_rel)} | "
                         f"{fmt(f_acc)} | {n} |")
    lines += ["", SHORT_DEFINITIONS]
    path = out_dir / "compare.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path
