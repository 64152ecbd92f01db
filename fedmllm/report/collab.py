"""Report of a collaboration run (a large server MLLM and small client MLLMs), from its files alone.

Reads ``config.toml`` (the two models, clients, rounds, public set), ``results.json`` (one entry per
system: E / F of each side, the gap closed, communication and client compute; written by
`fedmllm.collab.experiment.write_collab_results`) and ``metrics.jsonl`` (``global_eval`` per side and
round; the ``zeroshot`` events give round 0) and ``floors.json`` (each task's chance / majority
floors). Writes ``report.md``, with the systems table and the downstream score per task against
the zero-shot scores and the floors, and under ``plots/``: the E–F scatter of each side, the mean
downstream score over rounds (with the mean floors) and the bytes per client and round; every plot
gives a system the same colour and marker (`fedmllm.report.plotting.system_styles`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

from fedmllm.errors import UserError
from fedmllm.report.floors import floors_row, legend, mark, mean_floor, read_floors
from fedmllm.report.forgetting import SHORT_DEFINITIONS
from fedmllm.report.plotting import floor_lines, plt_figure, save_figure, style_of, system_styles
from fedmllm.runs import atomic_write, read_events, read_json

SIDES = ("large", "small")
NONE = "—"  # a measure the system does not have (that side is not trained, or not measured)
DEFINITIONS = (
    "E: mean downstream gain of a side over its own zero-shot model, in points; F: mean upstream change "
    "against that zero-shot model, in points (negative = forgetting); gap closed = (large after − large_zero) "
    "/ (large_pooled − large_zero) on the mean downstream score, in percent (100 % = as good as the large "
    f"model tuned on the pooled client data; {NONE} where the system leaves the large model as it is, or "
    "large_pooled scores as large_zero).")
DECODE_NOTE = (" Decode-time systems (family decode) train nothing with the clients: their bytes are those "
               "of the federated small model they steer (small_fedavg).")
COLUMNS = ("system", "family", "large E", "large F", "large F_rel (%)", "large F_acc", "small E", "small F",
           "small personalized mean", "gap closed (%)", "up / client / round", "down / client / round",
           "client seconds / round", "client peak memory (MB)")


def cell(value: Optional[float], spec: str = "+.1f", scale: float = 1.0) -> str:
    """``value`` × ``scale`` formatted, or "—" for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    return format(value * scale, spec)


def human_bytes(n: Optional[float]) -> str:
    """Decimal units, as the federated report's: 142464 -> "142.5 KB"."""
    if n is None:
        return NONE
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _mean(values) -> float:
    xs = list(values)
    return sum(xs) / len(xs)


def header(run_dir: Path, systems: list[dict]) -> list[str]:
    """Models, clients, rounds and public set (from ``config.toml``; models alone without it)."""
    path = run_dir / "config.toml"
    if not path.is_file():
        first = systems[0] if systems else {}
        return [f"- **large (server) model:** `{first.get('large_model', '?')}`; **small (client) model:** "
                f"`{first.get('small_model', '?')}` (no config.toml: clients, rounds and public set unknown)"]
    from fedmllm.collab.public import public_tasks
    from fedmllm.config import config_from_toml

    cfg = config_from_toml(path.read_text())
    fed, c = cfg.federated, cfg.collab
    source = "collab.public_tasks" if c.public_tasks else "data.upstream"
    return [f"- **large (server) model:** `{c.large}`; **small (client) model:** `{cfg.model.name}`",
            f"- **clients:** {fed.num_clients} ({fed.clients_per_round or fed.num_clients} per round); "
            f"**rounds:** {fed.rounds} of {fed.local_steps} local steps",
            f"- **public set** (the server's only data, {source}): {', '.join(public_tasks(cfg))}; "
            f"{c.public_n} samples per task from index {c.public_offset}"]


def systems_table(systems: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for s in systems:
        lg, sm = s.get("large") or {}, s.get("small") or {}
        row = [s["system"], s.get("family") or NONE, cell(lg.get("E")), cell(lg.get("F")), cell(lg.get("F_rel")),
               cell(lg.get("F_acc")), cell(sm.get("E")), cell(sm.get("F")),
               cell((s.get("personalized") or {}).get("mean_weighted"), ".1f"),
               cell(s.get("gap_closed"), ".1f", 100.0), human_bytes(s.get("bytes_up_per_client_round")),
               human_bytes(s.get("bytes_down_per_client_round")), cell(s.get("client_seconds_mean"), ".2f"),
               cell(s.get("client_peak_rss_mb"), ".0f")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def zero_shot_scores(events: list[dict]) -> dict[str, dict[str, float]]:
    """side -> task -> zero-shot downstream score (the small model's event has no side)."""
    return {e.get("side", "small"): e["downstream"] for e in events if e.get("event") == "zeroshot" and e.get("downstream")}


def downstream_tasks(systems: list[dict], events: list[dict]) -> list[str]:
    """The downstream tasks the run scored, zero-shot first."""
    zero = zero_shot_scores(events)
    return list(dict.fromkeys([t for side in zero.values() for t in side]
                              + [t for s in systems for side in SIDES for t in (s.get(side) or {}).get("downstream") or {}]))


def task_table(systems: list[dict], events: list[dict], floors: dict | None) -> str:
    """Downstream score per task of every system's sides (E in brackets), under the zero-shot rows
    of both sides and the floors row; a score below the task's chance marked. "" without scores."""
    zero = zero_shot_scores(events)
    rows = [(s["system"], side, s[side]) for s in systems for side in SIDES if (s.get(side) or {}).get("downstream")]
    tasks = downstream_tasks(systems, events)
    if not tasks:
        return ""
    lines = ["| system [side] | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for side in SIDES:
        if side in zero:
            lines.append(f"| base (zero-shot) [{side}] | " + " | ".join(
                cell(zero[side].get(t), ".1f") + mark(zero[side].get(t), floors, t) for t in tasks) + " |")
    if floors is not None:
        lines.append("| *floors: chance / majority* | " + " | ".join(floors_row(floors, tasks)) + " |")
    for name, side, r in rows:
        per = r.get("per_task") or {}
        lines.append(f"| {name} [{side}] | " + " | ".join(
            cell(r["downstream"].get(t), ".1f") + mark(r["downstream"].get(t), floors, t)
            + (f" ({per[t]['E']:+.1f})" if t in per else "") for t in tasks) + " |")
    return "\n".join(lines)


def ef_plot(systems: list[dict], side: str, colors: dict, path: Path) -> bool:
    """E (y) against F (x) of ``side``, one labelled point per system with that side; False if none."""
    points = [(s["system"], s[side]["F"], s[side]["E"]) for s in systems
              if s.get(side) and s[side].get("E") is not None and s[side].get("F") is not None]
    if not points:
        return False
    fig, ax = plt_figure(6.5, 4.5)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    at = defaultdict(list)  # systems on the same spot share one label
    for name, f, e in points:
        ax.scatter(f, e, color=colors[name]["color"], marker=colors[name]["marker"], s=50, edgecolors="black",
                   linewidths=0.4, label=name, zorder=3)
        at[(round(f, 2), round(e, 2))].append(name)
    for (f, e), names in at.items():
        ax.annotate("\n".join(names), (f, e), textcoords="offset points", xytext=(5, 4), fontsize=7, va="bottom")
    ax.margins(x=0.3, y=0.2)  # room for the labels
    ax.set_xlabel("F: mean upstream change vs zero-shot (points)")
    ax.set_ylabel("E: mean downstream gain vs zero-shot (points)")
    ax.set_title(f"{side} model: specialization vs forgetting\n"
                 "each point a system's final model; up = gained, right = kept more", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save_figure(fig, path)
    return True


def round_series(events: list[dict]) -> dict[str, dict[str, tuple[list, list]]]:
    """Per side and system: (rounds, mean downstream score), round 0 being the side's zero-shot."""
    zero, by = {}, {side: defaultdict(dict) for side in SIDES}
    for e in events:
        if e.get("event") == "zeroshot" and e.get("downstream"):
            zero[e.get("side", "small")] = _mean(e["downstream"].values())  # the small model's has no side
        elif e.get("event") == "global_eval" and e.get("side") in SIDES and e.get("downstream"):
            by[e["side"]][e["system"]][e["round"]] = _mean(e["downstream"].values())
    out = {}
    for side in SIDES:
        out[side] = {}
        for system, points in by[side].items():
            if side in zero:
                points.setdefault(0, zero[side])
            xs = sorted(points)
            out[side][system] = (xs, [points[x] for x in xs])
    return out


def rounds_plot(systems: list[dict], events: list[dict], colors: dict, path: Path,
                floors: Optional[dict] = None) -> bool:
    """Mean downstream score over rounds, one panel per side; systems without per-round evaluations
    (the baselines large_zero, large_pooled) are dashed lines at their final score; the mean chance
    (dashed black) and majority (dotted black) floors over the downstream tasks."""
    from matplotlib.ticker import MaxNLocator

    series = round_series(events)
    if not any(series.values()):
        return False
    tasks = downstream_tasks(systems, events)
    chance, majority = mean_floor(floors, tasks, "chance"), mean_floor(floors, tasks, "majority")
    fig, axes = plt_figure(11, 4, ncols=2)
    handles = {}
    for ax, side in zip(axes, SIDES):
        for name, (xs, ys) in series[side].items():
            (handles[name],) = ax.plot(xs, ys, ms=5, markerfacecolor="none", label=name, **style_of(colors, name))
        for s in systems:
            if s.get(side) and s["system"] not in series[side] and s[side].get("downstream_mean") is not None:
                handles[f"{s['system']} (final)"] = ax.axhline(s[side]["downstream_mean"], ls=(0, (6, 2)), lw=1,
                                                               color=colors[s["system"]]["color"])
        floor_lines(ax, chance, majority, "mean over datasets")
        handles.update({ln.get_label(): ln for ln in ax.get_lines() if ln.get_label().startswith(("chance", "majority"))})
        if not series[side]:
            ax.text(0.5, 0.5, f"no per-round evaluations of the {side} model", ha="center", transform=ax.transAxes)
        ax.set_xlabel("round (0 = zero-shot)")
        ax.set_ylabel("mean downstream score (points)")
        ax.set_title(f"{side} model: mean downstream score over rounds\n"
                     "mean over the downstream datasets of the side's global model", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    order = [n for s in systems for n in (s["system"], f"{s['system']} (final)") if n in handles]
    order += [n for n in handles if n.startswith(("chance", "majority"))]
    fig.legend([handles[n] for n in order], order, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    save_figure(fig, path)
    return True


def bytes_plot(systems: list[dict], colors: dict, path: Path) -> bool:
    """Bytes up (solid) and down (hatched) per client and round per system, log scale."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, NullFormatter

    keys = ("bytes_up_per_client_round", "bytes_down_per_client_round")
    rows = [s for s in systems if any(s.get(k) for k in keys)]
    if not rows:
        return False
    fig, ax = plt_figure(max(5.0, 0.9 * len(rows) + 2), 4)
    w = 0.38
    for i, s in enumerate(rows):
        for dx, key, hatch in ((-w / 2, keys[0], None), (w / 2, keys[1], "//")):
            v = s.get(key)
            if v:  # 0 or None: no bar (log scale)
                ax.bar(i + dx, v, w, color=colors[s["system"]]["color"], hatch=hatch, edgecolor="black",
                       linewidth=0.4)
                ax.annotate(human_bytes(v), (i + dx, v), textcoords="offset points", xytext=(0, 2), ha="center",
                            fontsize=6, rotation=90, va="bottom")
    ax.set_yscale("log")
    values = [s[k] for s in rows for k in keys if s.get(k)]
    bottom = 10 ** math.floor(math.log10(min(values)))  # a whole decade: bars comparable
    ax.set_ylim(bottom, max(values) * 10 ** max(0.7, 0.15 * math.log10(max(values) / bottom)))  # room for labels
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
    if max(values) * 5 < 10 * ax.get_ylim()[0]:  # within one decade: label the minor ticks too
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(range(len(rows)), [f"{s['system']}\n({s.get('family', '?')})" for s in rows], fontsize=7)
    ax.set_ylabel("bytes per client per round (log scale)")
    ax.set_title("Communication per client and round\nmean over the clients' replies of each round", fontsize=9)
    ax.legend(handles=[Patch(facecolor="white", edgecolor="black", label="up (client → server)"),
                       Patch(facecolor="white", edgecolor="black", hatch="//", label="down (server → client)")],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)
    return True


def build_plots(run_dir: Path, systems: list[dict], events: list[dict], floors: Optional[dict] = None) -> list[str]:
    plots = run_dir / "plots"
    names = [s["system"] for s in systems]
    colors = system_styles(names + [e["system"] for e in events if e.get("event") == "global_eval" and "system" in e])
    made = [f"collab_ef_{s}.png" for s in SIDES if ef_plot(systems, s, colors, plots / f"collab_ef_{s}.png")]
    if rounds_plot(systems, events, colors, plots / "collab_rounds.png", floors):
        made.append("collab_rounds.png")
    if bytes_plot(systems, colors, plots / "collab_bytes.png"):
        made.append("collab_bytes.png")
    return made


def write_report(run_dir) -> Path:
    """Write ``report.md`` and ``plots/`` of a collaboration run; returns the report path."""
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    if not isinstance(results, dict) or results.get("kind") != "collab":
        raise UserError(f"{run_dir / 'results.json'} is not a collaboration run's results (kind != \"collab\")")
    systems, events = results.get("systems", []), list(read_events(run_dir))
    floors = read_floors(run_dir)
    parts = [f"# Collaboration run — `{run_dir.name}`\n", *header(run_dir, systems), "", DEFINITIONS, "",
             "## Systems\n", systems_table(systems), "",
             f"Per-round columns are means over the clients' replies; {NONE} = the system has no such side or "
             "measure. Personalized mean: every client's own small model on its local test split, weighted by "
             "test samples." + DECODE_NOTE * any(s.get("family") == "decode" for s in systems), "",
             SHORT_DEFINITIONS, ""]
    parts += [f"- `{s['system']}` ({s.get('family', '?')}): {s.get('description', '')}" for s in systems] + [""]
    table = task_table(systems, events, floors)
    if table:
        parts += ["## Downstream score per task\n", "Cells: score (E vs that side's zero-shot), points.\n", table, "",
                  legend(floors, downstream_tasks(systems, events)), ""]
    names = build_plots(run_dir, systems, events, floors)
    if names:
        parts.append("## Plots\n")
        parts += [f"![{n[:-4]}](plots/{n})\n" for n in names]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(parts) + "\n")
    return path
