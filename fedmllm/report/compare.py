"""Side-by-side comparison of several run directories (``fedmllm report RUN1 RUN2 ...``).

A demo run directory holds no results of its own: its two sub-runs (``centralized/``,
``federated/``) are compared, labelled ``<demo>/centralized`` and ``<demo>/federated``. A run that
gives no row (unfinished, or a kind without E / F rows such as a run over seeds) is named under the
table with the reason, never dropped silently.
"""

from __future__ import annotations

from pathlib import Path

from fedmllm.report.forgetting import SHORT_DEFINITIONS, cell_variants, fmt, mean_of, system_variants
from fedmllm.runs import atomic_write, read_json

DEMO_HALVES = ("centralized", "federated")


def _entries(data: dict) -> dict[tuple[str, str], list[dict]]:
    """(model, method or system) -> the entries with E / F / O of one run's results.json."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for c in data.get("cells", []):
        rows.setdefault((c["model"], c["method"]), []).append(cell_variants(c))
    zero_up = (data.get("zero_shot") or {}).get("upstream")
    for entry in data.get("systems", []):
        if data.get("kind") == "collab":  # one row per side the system has
            for side in ("large", "small"):
                if entry.get(side):
                    rows.setdefault((entry.get(f"{side}_model", ""), f"{entry['system']} [{side}]"), []).append(entry[side])
        else:  # federated runs: one entry per system (strategy/baseline)
            rows.setdefault((entry.get("model", ""), entry["system"]), []).append(system_variants(entry, zero_up))
    return rows


def _summary_rows(run_dir: Path) -> list[tuple]:
    """(model, method or system, mean E, mean F, mean O, mean F_rel, mean F_acc, n) rows of one
    run, from its result files (F_rel / F_acc computed from stored scores for older runs)."""
    results = run_dir / "results.json"
    if not results.is_file():
        return []
    out = []
    for (model, what), cs in _entries(read_json(results)).items():
        mean = lambda k: sum(c[k] for c in cs) / len(cs)  # noqa: E731
        out.append((model, what, mean("E"), mean("F"), mean("O"), mean_of(c.get("F_rel") for c in cs),
                    mean_of(c.get("F_acc") for c in cs), len(cs)))
    return out


def compared_runs(run_dirs: list[Path]) -> list[tuple[str, Path]]:
    """(label, directory) of every run to compare: a demo's sub-runs in place of the demo."""
    from fedmllm.report import run_kind

    out = []
    for d in run_dirs:
        if run_kind(d) == "demo":
            out += [(f"{d.name}/{half}", d / half) for half in DEMO_HALVES if (d / half / "meta.json").is_file()]
        else:
            out.append((d.name, d))
    return out


def _why_empty(run_dir: Path) -> str:
    if not (run_dir / "results.json").is_file():
        return "no results.json yet (unfinished run)"
    kind = read_json(run_dir / "results.json").get("kind")
    if kind == "seeds":
        return "a run over seeds: compare its per-seed sub-runs `seed-<s>/`, or read its own report"
    return f"its results.json ({kind!r}) has no cells or systems"


def build_comparison(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``compare.md``: mean E / F / O / F_rel / F_acc per (run, model, method or system)."""
    lines = ["# Run comparison", "",
             "| run | model | method / system | mean E | mean F | mean O | mean F_rel (%) | mean F_acc | cells |",
             "|---|---|---|---|---|---|---|---|---|"]
    empty = []
    for label, d in compared_runs(run_dirs):
        rows = _summary_rows(d)
        if not rows:
            empty.append(f"- `{label}`: not in the table: {_why_empty(d)}.")
        for model, what, e, f, o, f_rel, f_acc, n in rows:
            lines.append(f"| {label} | {model} | {what} | {e:+.1f} | {f:+.1f} | {o:+.1f} | {fmt(f_rel)} | "
                         f"{fmt(f_acc)} | {n} |")
    lines += ["", *empty, *([""] if empty else []), SHORT_DEFINITIONS]
    path = out_dir / "compare.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path
