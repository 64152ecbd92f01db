"""Report of a centralized benchmark run, built from the run directory's files alone.

The table follows the paper's layout: rows are methods grouped by family, columns downstream
datasets, each cell ``tuned score / E / F / O``; per-family averages and the ranking of methods by
mean E and by mean F follow. Plots: the E–F trade-off (one marker per dataset, ideal corner
marked) and one bar chart per dataset.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from fedmllm.report.plotting import plt_figure, save_figure
from fedmllm.runs import atomic_write

FAMILY_ORDER = ("selective", "reparameterization", "additive")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def load_cells(run_dir: Path) -> list[dict]:
    """Every finished cell of the run (from ``cells/``; ``results.json`` is derived from them)."""
    return [json.loads(p.read_text()) for p in sorted((run_dir / "cells").glob("*.json"))]


def _method_order(cells: list[dict]) -> list[str]:
    family = {c["method"]: c["family"] for c in cells}
    seen = list(dict.fromkeys(c["method"] for c in cells))
    return sorted(seen, key=lambda m: (FAMILY_ORDER.index(family[m]) if family[m] in FAMILY_ORDER else 9, seen.index(m)))


def paper_table(cells: list[dict], model: str) -> str:
    """Markdown table: methods × datasets, cells tuned / E / F / O, family averages, mean column."""
    cells = [c for c in cells if c["model"] == model]
    tasks = list(dict.fromkeys(c["task"] for c in cells))
    by = {(c["method"], c["task"]): c for c in cells}
    methods = _method_order(cells)
    head = "| family | method | " + " | ".join(tasks) + " | mean E | mean F | mean O |"
    lines = [head, "|" + "---|" * (len(tasks) + 5)]
    family_rows: dict[str, list[dict]] = defaultdict(list)
    for m in methods:
        row_cells = [by.get((m, t)) for t in tasks]
        done = [c for c in row_cells if c]
        fam = done[0]["family"]
        family_rows[fam].extend(done)
        fmt = [f"{c['tuned_score']:.1f} / {c['E']:+.1f} / {c['F']:+.1f} / {c['O']:+.1f}" if c else "–" for c in row_cells]
        lines.append(f"| {fam} | {m} | " + " | ".join(fmt) + f" | {_mean([c['E'] for c in done]):+.1f} | "
                     f"{_mean([c['F'] for c in done]):+.1f} | {_mean([c['O'] for c in done]):+.1f} |")
    for fam, rows in family_rows.items():
        per_task = []
        for t in tasks:
            r = [c for c in rows if c["task"] == t]
            per_task.append(f"{_mean([c['E'] for c in r]):+.1f} / {_mean([c['F'] for c in r]):+.1f} / "
                            f"{_mean([c['O'] for c in r]):+.1f}" if r else "–")
        lines.append(f"| **{fam} avg** | | " + " | ".join(per_task) + f" | {_mean([c['E'] for c in rows]):+.1f} | "
                     f"{_mean([c['F'] for c in rows]):+.1f} | {_mean([c['O'] for c in rows]):+.1f} |")
    return "\n".join(lines)


def rankings(cells: list[dict], model: str) -> str:
    """Methods ranked by mean E (higher = learns more) and by mean F (higher = forgets less)."""
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c["model"] == model:
            for k in ("E", "F", "O"):
                per[c["method"]][k].append(c[k])
    out = []
    for key, what in (("E", "specialization (mean E)"), ("F", "stability (mean F, less forgetting first)"),
                      ("O", "overall (mean O)")):
        ranked = sorted(per, key=lambda m: -_mean(per[m][key]))
        out.append(f"- by {what}: " + " > ".join(f"{m} ({_mean(per[m][key]):+.1f})" for m in ranked))
    return "\n".join(out)


def forgetting_table(cells: list[dict], model: str) -> str:
    """Where the forgetting happens: mean change per upstream task (over downstream tasks)."""
    cells = [c for c in cells if c["model"] == model]
    ups = list(dict.fromkeys(k[3:] for c in cells for k in c if k.startswith("dF/")))
    lines = ["| method | " + " | ".join(ups) + " |", "|" + "---|" * (len(ups) + 1)]
    for m in _method_order(cells):
        rows = [c for c in cells if c["method"] == m]
        lines.append(f"| {m} | " + " | ".join(f"{_mean([c['dF/' + u] for c in rows]):+.1f}" for u in ups) + " |")
    return "\n".join(lines)


def tradeoff_plot(cells: list[dict], model: str, path: Path) -> None:
    """E (y) against F (x) per method; one marker shape per dataset; the ideal corner marked."""
    cells = [c for c in cells if c["model"] == model]
    tasks = list(dict.fromkeys(c["task"] for c in cells))
    methods = _method_order(cells)
    markers = "osD^vP*Xh<>"
    fig, ax = plt_figure(7, 5)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, m in enumerate(methods):
        for j, t in enumerate(tasks):
            for c in cells:
                if c["method"] == m and c["task"] == t:
                    ax.scatter(c["F"], c["E"], color=cmap(i % 20), marker=markers[j % len(markers)], s=45,
                               label=m if j == 0 else None, edgecolors="black", linewidths=0.4)
    xs = [c["F"] for c in cells] or [0]
    ys = [c["E"] for c in cells] or [0]
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.scatter([max(max(xs), 0)], [max(ys)], marker="*", s=250, color="gold", edgecolors="black", zorder=5)
    ax.annotate("ideal: high E, no forgetting", (max(max(xs), 0), max(ys)), textcoords="offset points",
                xytext=(-150, 8), fontsize=8)
    for j, t in enumerate(tasks):
        ax.scatter([], [], marker=markers[j % len(markers)], color="white", edgecolors="black", label=t)
    ax.set_xlabel("F: mean upstream change (points; negative = forgetting)")
    ax.set_ylabel("E: downstream gain over zero-shot (points)")
    ax.set_title(f"Specialization vs forgetting — {model}")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, path)


def bar_plots(cells: list[dict], model: str, plots: Path) -> list[Path]:
    """One chart per dataset: E and F per method."""
    cells = [c for c in cells if c["model"] == model]
    paths = []
    for t in dict.fromkeys(c["task"] for c in cells):
        rows = [c for c in cells if c["task"] == t]
        fig, ax = plt_figure(max(5, 0.6 * len(rows) + 2), 3.5)
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [c["E"] for c in rows], width=0.4, label="E (gain)")
        ax.bar([i + 0.2 for i in x], [c["F"] for c in rows], width=0.4, label="F (upstream change)")
        ax.set_xticks(list(x), [c["method"] for c in rows], rotation=35, ha="right", fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{t} — {model}")
        ax.legend(fontsize=7)
        path = plots / f"bars_{model.replace('/', '__')}_{t}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def build_centralized_report(run_dir: Path) -> Path:
    """Write ``report.md`` and ``plots/`` for a centralized run; returns the report path."""
    cells = load_cells(run_dir)
    plots = run_dir / "plots"
    parts = [f"# Centralized benchmark — `{run_dir.name}`\n",
             "Cells: tuned score / E / F / O, in points (percent). E = S(tuned, d) − S(base, d); "
             "F = mean over upstream u of S(tuned, u) − S(base, u) (negative = forgetting); O = E + F.\n"]
    models = list(dict.fromkeys(c["model"] for c in cells))
    for model in models:
        zs = run_dir / "zeroshot" / f"{model.replace('/', '__')}.json"
        if zs.is_file():
            base = json.loads(zs.read_text())["scores"]
            parts.append(f"## {model}\n\nZero-shot base scores: " + ", ".join(f"{t} {s:.1f}" for t, s in base.items()) + "\n")
        parts += [paper_table(cells, model), "", "### Rankings", rankings(cells, model), "",
                  "### Forgetting per upstream task (mean over downstream tasks; CIDEr-D tasks are × 100)",
                  forgetting_table(cells, model), ""]
        safe = model.replace("/", "__")
        tradeoff_plot(cells, model, plots / ("tradeoff.png" if len(models) == 1 else f"tradeoff_{safe}.png"))
        parts.append(f"![trade-off](plots/{'tradeoff.png' if len(models) == 1 else f'tradeoff_{safe}.png'})\n")
        for p in bar_plots(cells, model, plots):
            parts.append(f"![{p.stem}](plots/{p.name})")
        parts.append("")
    if not cells:
        parts.append("No finished cells yet.")
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(parts) + "\n")
    return path
