"""Report of a centralized benchmark run, built from the run directory's files alone.

The table follows the paper's layout: rows are methods grouped by family, columns downstream
datasets, each cell ``tuned score / E / F / O``, then mean E / F / O and the two forgetting
measures no single task dominates, mean F_rel (relative retention, %) and mean F_acc (accuracy
tasks only; `fedmllm.metrics.efo`); per-family averages and the ranking of methods by each follow.
Every table carries each task's chance / majority floors (``floors.json``, `fedmllm.report.floors`)
and marks a score below chance. Plots: the E–F trade-off (one marker per dataset, ideal corner
marked), once per forgetting measure, and per dataset the tuned scores against the zero-shot score
and the floors beside E / F / F_acc / F_rel.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from fedmllm.metrics.efo import task_metrics
from fedmllm.report.floors import floors_row, legend, mark, read_floors
from fedmllm.report.forgetting import SHORT_DEFINITIONS, cell_variants, definitions, fmt, mean_of
from fedmllm.report.plotting import floor_lines, legend_outside, plt_figure, save_figure, system_colours
from fedmllm.runs import atomic_write, read_json

FAMILY_ORDER = ("selective", "reparameterization", "additive")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def load_cells(run_dir: Path) -> list[dict]:
    """Every finished cell of the run (from ``cells/``; ``results.json`` is derived from them)."""
    return [read_json(p) for p in sorted((run_dir / "cells").glob("*.json"))]


def _method_order(cells: list[dict]) -> list[str]:
    family = {c["method"]: c["family"] for c in cells}
    seen = list(dict.fromkeys(c["method"] for c in cells))
    return sorted(seen, key=lambda m: (FAMILY_ORDER.index(family[m]) if family[m] in FAMILY_ORDER else 9, seen.index(m)))


def paper_table(cells: list[dict], model: str, floors: dict | None = None) -> str:
    """Markdown table: methods × datasets, cells tuned / E / F / O (a tuned score below the task's
    chance floor marked), the floors row, family averages, mean column."""
    cells = [c for c in cells if c["model"] == model]
    tasks = list(dict.fromkeys(c["task"] for c in cells))
    by = {(c["method"], c["task"]): c for c in cells}
    methods = _method_order(cells)
    head = "| family | method | " + " | ".join(tasks) + " | mean E | mean F | mean O | mean F_rel (%) | mean F_acc |"
    lines = [head, "|" + "---|" * (len(tasks) + 7)]

    def alt(rows: list[dict]) -> str:
        return " | ".join(fmt(mean_of(c.get(k) for c in rows)) for k in ("F_rel", "F_acc"))

    family_rows: dict[str, list[dict]] = defaultdict(list)
    for m in methods:
        row_cells = [by.get((m, t)) for t in tasks]
        done = [c for c in row_cells if c]
        fam = done[0]["family"]
        family_rows[fam].extend(done)
        shown = [f"{c['tuned_score']:.1f}{mark(c['tuned_score'], floors, c['task'])} / {c['E']:+.1f} / {c['F']:+.1f} / "
                 f"{c['O']:+.1f}" if c else "–" for c in row_cells]
        lines.append(f"| {fam} | {m} | " + " | ".join(shown) + f" | {_mean([c['E'] for c in done]):+.1f} | "
                     f"{_mean([c['F'] for c in done]):+.1f} | {_mean([c['O'] for c in done]):+.1f} | {alt(done)} |")
    for fam, rows in family_rows.items():
        per_task = []
        for t in tasks:
            r = [c for c in rows if c["task"] == t]
            per_task.append(f"{_mean([c['E'] for c in r]):+.1f} / {_mean([c['F'] for c in r]):+.1f} / "
                            f"{_mean([c['O'] for c in r]):+.1f}" if r else "–")
        lines.append(f"| **{fam} avg** | | " + " | ".join(per_task) + f" | {_mean([c['E'] for c in rows]):+.1f} | "
                     f"{_mean([c['F'] for c in rows]):+.1f} | {_mean([c['O'] for c in rows]):+.1f} | {alt(rows)} |")
    if floors is not None:
        lines.append("| *floors* | *chance / majority* | " + " | ".join(floors_row(floors, tasks)) + " |" + " – |" * 5)
    return "\n".join(lines)


def rankings(cells: list[dict], model: str) -> str:
    """Methods ranked by mean E (higher = learns more), by mean F, F_rel and F_acc (higher = forgets
    less) and by mean O. A method with no defined F_rel / F_acc is listed last, as "–"."""
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c["model"] == model:
            for k in ("E", "F", "O", "F_rel", "F_acc"):
                if c.get(k) is not None:
                    per[c["method"]][k].append(c[k])
    out = []
    for key, what in (("E", "specialization (mean E)"), ("F", "stability (mean F, the paper's; less forgetting first)"),
                      ("F_rel", "stability, relative (mean F_rel, %; less forgetting first)"),
                      ("F_acc", "stability, accuracy tasks only (mean F_acc; less forgetting first)"),
                      ("O", "overall (mean O)")):
        ranked = sorted(per, key=lambda m: (not per[m][key], -_mean(per[m][key]) if per[m][key] else 0.0))
        out.append(f"- by {what}: " + " > ".join(f"{m} ({fmt(mean_of(per[m][key]))})" for m in ranked))
    return "\n".join(out)


def forgetting_table(cells: list[dict], model: str, floors: dict | None = None) -> str:
    """Where the forgetting happens: mean change per upstream task (over downstream tasks); below
    it the base's own scores (a base at its floor cannot forget there) and the floors."""
    cells = [c for c in cells if c["model"] == model]
    ups = list(dict.fromkeys(k[3:] for c in cells for k in c if k.startswith("dF/")))
    metric = task_metrics(ups)
    lines = ["| method | " + " | ".join(f"{u} ({metric[u] or '?'})" for u in ups) + " |", "|" + "---|" * (len(ups) + 1)]
    for m in _method_order(cells):
        rows = [c for c in cells if c["method"] == m]
        lines.append(f"| {m} | " + " | ".join(fmt(mean_of(c.get('dF/' + u) for c in rows)) for u in ups) + " |")
    base = {u: next((c["upstream_base"][u] for c in cells if u in (c.get("upstream_base") or {})), None) for u in ups}
    if any(v is not None for v in base.values()):
        lines.append("| *zero-shot base score* | " + " | ".join(
            "–" if base[u] is None else f"{base[u]:.1f}{mark(base[u], floors, u)}" for u in ups) + " |")
    if floors is not None:
        lines.append("| *floors: chance / majority* | " + " | ".join(floors_row(floors, ups)) + " |")
    return "\n".join(lines)


def relative_table(cells: list[dict], model: str) -> str:
    """Relative change per upstream task, 100 (S(tuned, u) − S(base, u)) / S(base, u), mean over
    downstream tasks; "–" where the base score is 0 or the cell did not store its upstream scores."""
    cells = [c for c in cells if c["model"] == model]
    ups = list(dict.fromkeys(k[3:] for c in cells for k in c if k.startswith("dF/")))

    def rel(c: dict, u: str):
        t, b = (c.get("upstream_tuned") or {}).get(u), (c.get("upstream_base") or {}).get(u)
        return None if t is None or not b else 100.0 * (t - b) / b

    lines = ["| method | " + " | ".join(ups) + " |", "|" + "---|" * (len(ups) + 1)]
    for m in _method_order(cells):
        rows = [c for c in cells if c["method"] == m]
        lines.append(f"| {m} | " + " | ".join(fmt(mean_of(rel(c, u) for c in rows)) for u in ups) + " |")
    return "\n".join(lines)


XLABELS = {"F": "F: mean upstream change (points; negative = forgetting)",
           "F_rel": "F_rel: mean relative upstream change (% of base score; negative = forgetting)",
           "F_acc": "F_acc: mean upstream change, accuracy tasks only (points)"}


def tradeoff_plot(cells: list[dict], model: str, path: Path, key: str = "F") -> None:
    """E (y) against ``key`` (x: F, F_rel or F_acc) per method; one marker shape per dataset; the
    ideal corner marked. Cells where ``key`` is not defined are left out."""
    all_cells = cells
    cells = [c for c in cells if c["model"] == model and c.get(key) is not None]
    tasks = list(dict.fromkeys(c["task"] for c in cells))
    methods = _method_order(cells)
    markers = "osD^vP*Xh<>"
    fig, ax = plt_figure(7, 5)
    colours = system_colours(_method_order([c for c in all_cells if c["model"] == model]))  # as in the bar charts
    for m in methods:
        labelled = False  # one legend entry per method, whichever task it has
        for j, t in enumerate(tasks):
            for c in cells:
                if c["method"] == m and c["task"] == t:
                    ax.scatter(c[key], c["E"], color=colours[m], marker=markers[j % len(markers)], s=45,
                               label=None if labelled else m, edgecolors="black", linewidths=0.4)
                    labelled = True
    xs = [c[key] for c in cells] or [0]
    ys = [c["E"] for c in cells] or [0]
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.scatter([max(max(xs), 0)], [max(ys)], marker="*", s=250, color="gold", edgecolors="black", zorder=5)
    ax.annotate("ideal: high E, no forgetting", (max(max(xs), 0), max(ys)), textcoords="offset points",
                xytext=(-150, 8), fontsize=8)
    for j, t in enumerate(tasks):
        ax.scatter([], [], marker=markers[j % len(markers)], color="white", edgecolors="black", label=t)
    ax.set_xlabel(XLABELS[key])
    ax.set_ylabel("E: downstream gain over zero-shot (points)")
    ax.set_title(f"Specialization vs forgetting ({key}) — {model}")
    if cells:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.text(0.5, 0.5, f"{key} not defined for these cells", ha="center", transform=ax.transAxes)
    save_figure(fig, path)


def _score_panel(ax, rows: list[dict], task: str, floors: dict | None, colours: dict) -> None:
    """Tuned score per method (bars, the method's colour), zero-shot score and floors as lines."""
    x = range(len(rows))
    ax.bar(list(x), [c["tuned_score"] for c in rows], width=0.6, color=[colours[c["method"]] for c in rows],
           edgecolor="black", linewidth=0.4)
    ax.axhline(rows[0]["base_score"], color="grey", lw=1.2, label=f"zero-shot base: {rows[0]['base_score']:.1f}")
    f = (floors or {}).get(task) or {}
    floor_lines(ax, f.get("chance"), f.get("majority"))
    ax.set_xticks(list(x), [c["method"] for c in rows], rotation=35, ha="right", fontsize=8)
    ax.set_xlabel("method", fontsize=8)
    ax.set_ylabel(f"score on {task} (points, {task_metrics([task])[task] or 'task metric'})", fontsize=8)
    ax.set_title("Tuned downstream score\nbars: each method; lines: zero-shot and floors"
                 + ("" if floors is not None else " (floors not recorded)"), fontsize=9)
    legend_outside(ax, below=True)


def bar_plots(cells: list[dict], model: str, plots: Path, floors: dict | None = None) -> list[Path]:
    """One figure per dataset: the tuned score per method against the zero-shot score and the
    chance / majority floors; E, F and F_acc (points, left axis) and F_rel (%, right axis) per method."""
    cells = [c for c in cells if c["model"] == model]
    colours = system_colours(_method_order(cells))
    paths = []
    nan = float("nan")
    for t in dict.fromkeys(c["task"] for c in cells):
        rows = [c for c in cells if c["task"] == t]
        fig, (score_ax, ax) = plt_figure(max(9, 1.4 * len(rows) + 6), 3.8, ncols=2)
        _score_panel(score_ax, rows, t, floors, colours)
        x = range(len(rows))
        w = 0.2
        ax.bar([i - 1.5 * w for i in x], [c["E"] for c in rows], width=w, label="E (gain, points)")
        ax.bar([i - 0.5 * w for i in x], [c["F"] for c in rows], width=w, label="F (paper's, points)")
        ax.bar([i + 0.5 * w for i in x], [nan if c.get("F_acc") is None else c["F_acc"] for c in rows], width=w,
               label="F_acc (accuracy tasks, points)")
        ax2 = ax.twinx()
        ax2.bar([i + 1.5 * w for i in x], [nan if c.get("F_rel") is None else c["F_rel"] for c in rows], width=w,
                color="C3", hatch="//", label="F_rel (%, right axis)")
        ax2.set_ylabel("F_rel (% of base score)", fontsize=8)
        ax2.axhline(0, color="C3", lw=0.4)
        ax.set_xticks(list(x), [c["method"] for c in rows], rotation=35, ha="right", fontsize=8)
        ax.set_xlabel("method", fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_ylabel("E, F, F_acc (points)", fontsize=8)
        ax.set_title(f"{t}: gain and forgetting — {model}\n"
                     "E = tuned − zero-shot; F = mean upstream change (< 0: forgot)", fontsize=9)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
        path = plots / f"bars_{model.replace('/', '__')}_{t}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def build_centralized_report(run_dir: Path) -> Path:
    """Write ``report.md`` and ``plots/`` for a centralized run; returns the report path."""
    cells = [cell_variants(c) for c in load_cells(run_dir)]  # old cells: F_rel / F_acc from stored scores
    floors = read_floors(run_dir)
    plots = run_dir / "plots"
    parts = [f"# Centralized benchmark — `{run_dir.name}`\n",
             "Cells: tuned score / E / F / O, in points (percent). E = S(tuned, d) − S(base, d); "
             "F = mean over upstream u of S(tuned, u) − S(base, u) (negative = forgetting); O = E + F. "
             "F_rel and F_acc (defined under each table) are forgetting that no one task dominates.\n"]
    models = list(dict.fromkeys(c["model"] for c in cells))
    for model in models:
        zs = run_dir / "zeroshot" / f"{model.replace('/', '__')}.json"
        if zs.is_file():
            base = read_json(zs)["scores"]
            parts.append(f"## {model}\n\nZero-shot base scores: "
                         + ", ".join(f"{t} {s:.1f}{mark(s, floors, t)}" for t, s in base.items()) + "\n")
        mine = [c for c in cells if c["model"] == model]
        tasks = list(dict.fromkeys(c["task"] for c in mine))
        parts += [paper_table(cells, model, floors), "", legend(floors, tasks), "", definitions(mine, "mean "), "",
                  "### Rankings", rankings(cells, model), "",
                  SHORT_DEFINITIONS, "",
                  "### Forgetting per upstream task (points, mean over downstream tasks; metric in brackets, "
                  "CIDEr-D tasks are × 100)", forgetting_table(cells, model, floors), "",
                  "- Each column is S(tuned, u) − S(base, u); F is their mean, F_acc the mean over the "
                  "accuracy-metric columns (all but cider_d).", "",
                  "### Relative change per upstream task (% of the base score, mean over downstream tasks)",
                  relative_table(cells, model), "",
                  "- Each column is (S(tuned, u) − S(base, u)) / S(base, u) × 100; F_rel is their mean "
                  "(– where the base score is 0: left out).", ""]
        safe = model.replace("/", "__")
        for key in ("F", "F_rel", "F_acc"):
            name = ("tradeoff" if key == "F" else f"tradeoff_{key}") + ("" if len(models) == 1 else f"_{safe}") + ".png"
            tradeoff_plot(cells, model, plots / name, key)
            parts.append(f"![trade-off {key}](plots/{name})")
        parts.append("")
        for p in bar_plots(cells, model, plots, floors):
            parts.append(f"![{p.stem}](plots/{p.name})")
        parts.append("")
    if not cells:
        parts.append("No finished cells yet.")
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(parts) + "\n")
    return path
