"""Report of one experiment over several seeds (a run directory of kind ``seeds``).

Every number is the mean over the seeds' sub-runs ``seed-<s>/`` with its 95% Student-t interval
and sample std (`fedmllm.metrics.stats`); comparisons are *paired* (A − B within each seed, the
same splits and draws, then summarised), which is what tells a difference from seed noise: an
interval that excludes 0 is marked. Plots carry the same intervals as error bars or bands.
``results.json`` holds every summary (mean, std, interval, the per-seed values) for scripts.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional

from fedmllm.metrics.stats import CONFIDENCE, Summary, paired, summarize
from fedmllm.report.forgetting import SHORT_DEFINITIONS, cell_variants, system_variants
from fedmllm.report.plotting import plt_figure, save_figure
from fedmllm.runs import atomic_write, read_events, read_json, write_json

MEASURES = ("E", "F", "O", "F_rel", "F_acc")
REFERENCES = {"centralized": ("full_st",), "federated": ("fedavg",), "collab": ("small_fedavg", "fedcollm")}


# --- what one seed's sub-run measured ----------------------------------------------------------
def _halves(seed_dir: Path, experiment: str) -> dict[str, Path]:
    """The result-bearing run directories of one seed: the run itself, or the demo's two halves."""
    if experiment == "demo":
        return {k: seed_dir / k for k in ("centralized", "federated") if (seed_dir / k / "results.json").is_file()}
    return {experiment: seed_dir} if (seed_dir / "results.json").is_file() else {}


def rows_of(kind: str, data: dict) -> dict[tuple, dict[str, Optional[float]]]:
    """(row key) -> {column: value} of one finished sub-run's results. Row keys start with a table name."""
    rows: dict[tuple, dict[str, Optional[float]]] = {}
    if kind == "centralized":
        per_method: dict[tuple, list[dict]] = defaultdict(list)
        for c in (cell_variants(c) for c in data["cells"]):
            rows[("cell", c["model"], c["method"], c["task"])] = {"score": c["tuned_score"], "E": c["E"], "F": c["F"],
                                                                    "O": c["O"]}
            per_method[(c["model"], c["method"], c["family"])].append(c)
        for (model, method, family), cs in per_method.items():
            rows[("method", model, method, family)] = {
                k: (sum(c[k] for c in cs if c.get(k) is not None) / len(cs)
                    if all(c.get(k) is not None for c in cs) else None) for k in MEASURES}
    elif kind == "federated":
        zero = data.get("zero_shot") or {}
        for s in (system_variants(s, zero.get("upstream")) for s in data["systems"]):
            pers = s.get("personalized") or {}
            rows[("system", s["system"])] = {**{k: s.get(k) for k in MEASURES},
                                             "personalized": pers.get("mean_weighted")}
            for task, v in s["per_task"].items():
                rows[("system_task", s["system"], task)] = {"score": v["score"], "E": v["E"]}
    elif kind == "collab":
        for s in data["systems"]:
            for side in ("large", "small"):
                if s.get(side):
                    rows[("side", s["system"], side)] = {**{k: s[side].get(k) for k in MEASURES},
                                                         "gap_closed": s.get("gap_closed") if side == "large" else None}
    return rows


def _curves(run_dir: Path, data: dict) -> dict[str, dict[int, float]]:
    """system -> {round: mean downstream score} from a federated sub-run's events, round 0 = zero-shot."""
    zero = (data.get("zero_shot") or {}).get("downstream") or {}
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for e in read_events(run_dir):
        if e.get("event") == "global_eval" and e.get("downstream") and "side" not in e:
            out[e["system"]][int(e["round"])] = sum(e["downstream"].values()) / len(e["downstream"])
    if zero:
        for curve in out.values():
            curve[0] = sum(zero.values()) / len(zero)
    return out


def _floors(run_dir: Path) -> dict[str, dict]:
    path = run_dir / "floors.json"
    return read_json(path) if path.is_file() else {}


# --- summaries over seeds ----------------------------------------------------------------------
def collect(run_dir: Path) -> dict:
    """Per half: {row: {column: {seed: value}}}, curves {system: {round: {seed: value}}}, floors."""
    meta = read_json(run_dir / "meta.json")
    experiment, seeds = meta["experiment"], list(meta["seeds"])
    out: dict = {"experiment": experiment, "seeds": seeds, "done": [], "halves": {}}
    for seed in seeds:
        halves = _halves(run_dir / f"seed-{seed}", experiment)
        if not halves:
            continue
        out["done"].append(seed)
        for kind, path in halves.items():
            h = out["halves"].setdefault(kind, {"rows": defaultdict(lambda: defaultdict(dict)),
                                                "curves": defaultdict(lambda: defaultdict(dict)), "floors": {}})
            data = read_json(path / "results.json")
            for row, cols in rows_of(kind, data).items():
                for col, v in cols.items():
                    h["rows"][row][col][seed] = v
            if kind == "federated":
                for system, curve in _curves(path, data).items():
                    for r, v in curve.items():
                        h["curves"][system][r][seed] = v
            for task, f in _floors(path).items():
                h["floors"].setdefault(task, defaultdict(dict))
                for k in ("chance", "majority"):
                    h["floors"][task][k][seed] = f.get(k)
    return out


def _cell(s: Optional[Summary], spec: str = "+.1f") -> str:
    return "–" if s is None else s.fmt(spec, std=False) + (" *" if s.excludes_zero() else "")


def _plain(s: Optional[Summary], spec: str = ".1f") -> str:
    return "–" if s is None else s.fmt(spec, std=True)


def _reference(kind: str, names: list[str]) -> Optional[str]:
    return next((r for r in REFERENCES.get(kind, ()) if r in names), names[0] if names else None)


def summarise_half(kind: str, h: dict) -> dict:
    """Every row's columns summarised, and the paired differences against the reference row."""
    rows = {row: {col: summarize(v.values()) for col, v in cols.items()} for row, cols in h["rows"].items()}
    table = {"centralized": "method", "federated": "system", "collab": "side"}[kind]
    main = [r for r in h["rows"] if r[0] == table]
    pairs = []
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for r in main:  # compare within a model (centralized) or a side (collab)
        groups[(r[1],) if kind == "centralized" else (r[2],) if kind == "collab" else ()].append(r)
    for group, members in groups.items():
        name_of = (lambda r: r[2]) if kind == "centralized" else (lambda r: r[1])
        ref = _reference(kind, [name_of(r) for r in members])
        ref_row = next(r for r in members if name_of(r) == ref)
        for r in members:
            if r == ref_row:
                continue
            pairs.append({"group": list(group), "a": name_of(r), "b": ref,
                          **{k: paired(h["rows"][r].get(k, {}), h["rows"][ref_row].get(k, {})) for k in ("E", "F", "O")}})
    floors = {t: {k: summarize(v.values()) for k, v in f.items()} for t, f in h["floors"].items()}
    return {"rows": rows, "pairs": pairs, "floors": floors, "main": main}


# --- markdown ----------------------------------------------------------------------------------
def _main_table(kind: str, s: dict) -> list[str]:
    if kind == "centralized":
        head = "| model | method | family | mean E | mean F | mean O | mean F_rel (%) | mean F_acc |"
        body = [f"| {r[1]} | {r[2]} | {r[3]} | " + " | ".join(_plain(s['rows'][r].get(k), "+.1f") for k in MEASURES) + " |"
                for r in s["main"]]
    elif kind == "federated":
        head = "| system | mean E | F | mean O | F_rel (%) | F_acc | personalized (weighted) |"
        body = [f"| {r[1]} | " + " | ".join(_plain(s['rows'][r].get(k), "+.1f") for k in MEASURES)
                + f" | {_plain(s['rows'][r].get('personalized'))} |" for r in s["main"]]
    else:
        head = "| system | side | mean E | F | mean O | F_rel (%) | F_acc | gap closed |"
        body = [f"| {r[1]} | {r[2]} | " + " | ".join(_plain(s['rows'][r].get(k), "+.1f") for k in MEASURES)
                + f" | {_plain(s['rows'][r].get('gap_closed'), '.2f')} |" for r in s["main"]]
    return [head, "|" + "---|" * (head.count("|") - 1), *body]


def _task_table(kind: str, s: dict) -> list[str]:
    """Downstream score per task (mean ± CI), with the task's chance / majority floors."""
    prefix = {"centralized": "cell", "federated": "system_task"}.get(kind)
    if prefix is None:
        return []
    cells = [r for r in s["rows"] if r[0] == prefix]
    tasks = list(dict.fromkeys(r[-1] for r in cells))
    names = list(dict.fromkeys(r[1:-1] for r in cells))
    head = "| " + ("model | method" if kind == "centralized" else "system") + " | " + " | ".join(tasks) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in names:
        vals = [_plain(s["rows"].get((prefix, *name, t), {}).get("score")) for t in tasks]
        lines.append(f"| {' | '.join(name)} | " + " | ".join(vals) + " |")
    for k in ("chance", "majority"):
        if any(s["floors"].get(t, {}).get(k) for t in tasks):
            pad = " | " if kind == "centralized" else ""
            lines.append(f"| *{k}*{pad} | " + " | ".join(_plain(s["floors"].get(t, {}).get(k)) for t in tasks) + " |")
    return lines


def _pairs_table(s: dict) -> list[str]:
    if not s["pairs"]:
        return []
    lines = ["| comparison (paired, A − B) | ΔE | ΔF | ΔO |", "|---|---|---|---|"]
    for p in s["pairs"]:
        where = f" ({', '.join(p['group'])})" if p["group"] else ""
        lines.append(f"| {p['a']} − {p['b']}{where} | {_cell(p['E'])} | {_cell(p['F'])} | {_cell(p['O'])} |")
    return lines


def _plots(kind: str, s: dict, h: dict, plots: Path, label: str) -> list[str]:
    """E–F trade-off with 95% error bars; federated: mean downstream score per round with bands."""
    out = []
    pts = [(r, s["rows"][r].get("E"), s["rows"][r].get("F")) for r in s["main"]]
    pts = [(r, e, f) for r, e, f in pts if e is not None and f is not None]
    if pts:
        fig, ax = plt_figure(6.5, 4.2)
        for i, (r, e, f) in enumerate(pts):
            name = r[2] if kind == "centralized" else f"{r[1]} ({r[2]})" if kind == "collab" else r[1]
            ax.errorbar(e.mean, f.mean, xerr=e.half or 0, yerr=f.half or 0, fmt="o", capsize=3, label=name,
                        color=f"C{i % 10}")
        ax.axhline(0, color="grey", lw=0.6)
        out.append(_finish(fig, ax, plots / f"{label}_ef.png", "mean E: downstream gain over zero-shot (points)",
                           "F: mean upstream score change (points)",
                           f"E–F trade-off, mean ± {CONFIDENCE:.0%} CI over seeds"))
    if h.get("curves"):
        fig, ax = plt_figure(6.5, 4.0)
        for i, (system, curve) in enumerate(h["curves"].items()):
            rounds = sorted(curve)
            sums = [summarize(curve[r].values()) for r in rounds]
            mean = [x.mean for x in sums]
            ax.plot(rounds, mean, marker="os^vD<>ph*"[i % 10], ls=("-", "--", ":", "-.")[i % 4], color=f"C{i % 10}",
                    label=system)
            if all(x.half is not None for x in sums):
                ax.fill_between(rounds, [x.low for x in sums], [x.high for x in sums], color=f"C{i % 10}", alpha=0.15)
        out.append(_finish(fig, ax, plots / f"{label}_rounds.png", "round (0 = zero-shot base)",
                           "mean downstream score (%)",
                           f"Global model per round, mean and {CONFIDENCE:.0%} CI band over seeds"))
    return out


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> str:
    """Labels, title, the legend outside the data; saves; the markdown image line."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save_figure(fig, path)
    return f"![{title}](plots/{path.name})"


def _jsonable(s: dict) -> dict:
    d = lambda x: None if x is None else x.to_dict()  # noqa: E731
    return {"rows": [{"row": list(r), **{c: d(v) for c, v in cols.items()}} for r, cols in s["rows"].items()],
            "paired": [{**{k: p[k] for k in ("group", "a", "b")}, **{k: d(p[k]) for k in ("E", "F", "O")}}
                       for p in s["pairs"]],
            "floors": {t: {k: d(v) for k, v in f.items()} for t, f in s["floors"].items()}}


def build_seeds_report(run_dir: Path) -> Path:
    """Write ``report.md``, ``plots/`` and ``results.json`` of a run over seeds."""
    data = collect(run_dir)
    seeds, done = data["seeds"], data["done"]
    lines = [f"# {data['experiment']} over seeds — `{run_dir.name}`", "",
             f"Seeds {', '.join(map(str, seeds))}; finished: {', '.join(map(str, done)) or 'none yet'}. "
             f"Each cell: mean ± half-width of the {CONFIDENCE:.0%} Student-t interval over the seeds "
             "(t(0.975, n−1) · sd / √n), sd = sample standard deviation. Paired differences are "
             "summarised over the per-seed differences (same splits and draws in both); * marks an interval "
             "that excludes 0. Each seed's own report: `seed-<s>/report.md`.", ""]
    results = {"kind": "seeds", "experiment": data["experiment"], "seeds": seeds, "finished": done, "halves": {}}
    for kind, h in data["halves"].items():
        s = summarise_half(kind, h)
        results["halves"][kind] = _jsonable(s)
        lines += [f"## {kind}", "", *_main_table(kind, s), ""]
        task = _task_table(kind, s)
        if task:
            lines += ["Downstream score per task (mean ± CI, sd); floors: *chance* = expected score of a uniform "
                      "guess, *majority* = always the most frequent training answer.", "", *task, ""]
        pairs = _pairs_table(s)
        if pairs:
            lines += ["Paired differences against the reference (ΔF > 0: forgets less than the reference).", "",
                      *pairs, ""]
        lines += _plots(kind, s, h, run_dir / "plots", kind) + [""]
    lines += [SHORT_DEFINITIONS, ""]
    write_json(run_dir / "results.json", results)
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(lines))
    return path
