"""Per-round plots of a federated run, from its events (``metrics.jsonl``) and run files alone.

The global model's mean downstream score per round and its score per dataset (one panel each), both
from round 0 = the zero-shot base and with the chance / majority floors (``floors.json``); the
forgetting F, F_rel and F_acc per round (0 at round 0: the base against itself); drift over rounds
(update norms, cosines, B-local dissimilarity, LoRA aggregation discrepancy); client-update cosine
heatmaps; the clients' training loss. One colour, marker and dash per system in every panel
(`fedmllm.report.plotting.system_styles`); the baselines' final values as dashed levels.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from fedmllm.metrics.efo import forgetting_summary, task_metrics
from fedmllm.report.floors import mean_floor
from fedmllm.report.plotting import floor_lines, legend_outside, plt_figure, save_figure, style_of, system_styles
from fedmllm.runs import read_json

ROUNDS_X = "round (0 = zero-shot base)"


def _line_plot(series: dict[str, tuple[list, list]], path: Path, *, title: str, ylabel: str, styles: dict,
               xlabel: str = ROUNDS_X, hlines: dict[str, float] | None = None,
               floors: tuple[float | None, float | None] = (None, None), floor_what: str = "") -> None:
    """One line per system in its fixed style (hollow markers: a line on another stays visible),
    baselines' final values as dashed levels, chance / majority floors, legend outside."""
    fig, ax = plt_figure(7.5, 4)
    _draw_lines(ax, series, styles, hlines)
    floor_lines(ax, *floors, what=floor_what)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    legend_outside(ax)
    save_figure(fig, path)


def _draw_lines(ax, series: dict[str, tuple[list, list]], styles: dict, hlines: dict[str, float] | None) -> None:
    from matplotlib.ticker import MaxNLocator

    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, ms=5, lw=1.4, markerfacecolor="none", label=name, **style_of(styles, name))
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls=(0, (6, 2)), lw=1.2, alpha=0.7, color=style_of(styles, name)["color"],
                   label=f"{name} (final): {y:.1f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


DRIFT_PANELS = (  # (key, title with its definition, y label)
    ("update_norm_mean", "Client update size: Σ_k p_k ||Δ_k||, Δ_k = client k's update",
     "mean update L2 norm (parameter units)"),
    ("cosine_pairwise_mean", "Agreement: mean pairwise cos(Δ_k, Δ_j) (1 = same direction)",
     "mean pairwise cosine (−1 to 1)"),
    ("b_local", "Dissimilarity: sqrt(Σ p_k ||Δ_k||² / ||Σ p_k Δ_k||²) (FedProx, Def. 3)",
     "B-local (≥ 1; 1 = equal updates)"),
    ("lora_discrepancy", "LoRA: Σ_layers ||Σ p_k B_k A_k − (Σ p_k B_k)(Σ p_k A_k)||_F",
     "discrepancy (Frobenius norm)"),
)
DRIFT_GROUPS = {"all.": ("-", "all trainable parameters"), "lora_dW.": ("--", "LoRA effective update dW = s·B·A")}


def _drift_plot(rounds: dict[str, list[dict]], path: Path, styles: dict) -> None:
    """Four drift measures per round; colour and marker = system in every panel, line style = the
    parameters measured (solid: all trainable, dashed: LoRA dW)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt_figure(12, 7.5, ncols=2, nrows=2)
    used_groups = set()
    for ax, (key, title, ylabel) in zip(axes.flat, DRIFT_PANELS):
        for system, rs in rounds.items():
            for prefix in (("",) if key == "lora_discrepancy" else tuple(DRIFT_GROUPS)):
                ys = [r.get("drift", {}).get(prefix + key) for r in rs]
                if any(y is not None for y in ys):
                    st = {**style_of(styles, system), "linestyle": DRIFT_GROUPS.get(prefix, ("-",))[0]}
                    ax.plot([r["round"] for r in rs], ys, ms=4, markerfacecolor="none", **st)
                    used_groups.add(prefix)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], markerfacecolor="none", label=s, **{**style_of(styles, s), "linestyle": "-"})
               for s in rounds]
    handles += [Line2D([], [], color="black", linestyle=ls, label=what) for prefix, (ls, what) in DRIFT_GROUPS.items()
                if prefix in used_groups]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=7)
    fig.suptitle("Client drift per round (p_k = client k's share of the round's examples)", fontsize=10)
    save_figure(fig, path)


def _heatmap(matrix: list[list[float]], clients: list[int], title: str, path: Path) -> None:
    import numpy as np

    fig, ax = plt_figure(4.8, 4)
    m = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(clients)), clients)
    ax.set_yticks(range(len(clients)), clients)
    ax.set_xlabel("client")
    ax.set_ylabel("client")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="cosine of the two clients' updates (−1 to 1)")
    save_figure(fig, path)


def round_variants(run_dir: Path, evals: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Per system, its ``global_eval`` events that measured F, with F_rel / F_acc added: computed
    from the event's upstream scores against the zero-shot scores of the same upstream subsample
    (``zeroshot.json`` "small"), as the event's F is. Events it cannot compute them for get None."""
    path = run_dir / "zeroshot.json"
    small = ((read_json(path).get("small") or {}).get("upstream") or {}) if path.is_file() else {}
    metrics = task_metrics(small)
    out: dict[str, list[dict]] = {}
    for system, es in evals.items():
        rows = []
        for e in es:
            if "F" not in e:
                continue
            up = e.get("upstream") or {}
            row = {"round": e["round"], "F_rel": None, "F_acc": None}
            if up and set(up) <= set(small):
                fs = forgetting_summary(up, {u: small[u] for u in up}, metrics)
                row.update(F_rel=fs["F_rel"], F_acc=fs["F_acc"])
            rows.append(row)
        out[system] = rows
    return out


def report_systems(systems: list[dict], events: list[dict]) -> list[str]:
    """The report's system names in table order, then any only the events name: the list every
    panel's styles come from."""
    seen = [s["system"] for s in systems]
    seen += [e["system"] for e in events if e.get("event") in ("global_eval", "round", "client_train") and "system" in e]
    return list(dict.fromkeys(seen))


def _from_zero(points: list[tuple[int, float]], at_zero: float | None) -> tuple[list, list]:
    """(rounds, values) with round 0 = ``at_zero`` in front (unless None or already there)."""
    if at_zero is not None and all(r != 0 for r, _ in points):
        points = [(0, at_zero), *points]
    return [r for r, _ in points], [v for _, v in points]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def _score_plots(run_dir: Path, evals: dict, zero: dict | None, floors: dict | None, styles: dict,
                 base: dict) -> list[str]:
    """Mean downstream score per round (round 0 = zero-shot), with the mean floors; and the score
    per dataset, one panel each with the dataset's floors."""
    tasks = list(dict.fromkeys(t for es in evals.values() for e in es for t in e["downstream"]))
    mean0 = _mean(zero["downstream"].values()) if zero else None
    series = {s: _from_zero([(e["round"], _mean(e["downstream"].values())) for e in es], mean0) for s, es in evals.items()}
    _line_plot(series, run_dir / "plots" / "rounds_downstream.png", styles=styles,
               title="Global model: mean downstream score per round\nmean over the downstream datasets' test scores"
                     + ("" if floors is not None else " (floors not recorded)"),
               ylabel="mean downstream score (points)", hlines={k: v["downstream_mean"] for k, v in base.items()},
               floors=(mean_floor(floors, tasks, "chance"), mean_floor(floors, tasks, "majority")),
               floor_what="mean over datasets")
    _tasks_plot(run_dir / "plots" / "rounds_tasks.png", tasks, evals, zero, floors, styles, base)
    return ["rounds_downstream.png", "rounds_tasks.png"]


def _tasks_plot(path: Path, tasks: list[str], evals: dict, zero: dict | None, floors: dict | None, styles: dict,
                base: dict) -> None:
    """One panel per downstream dataset: every system's score per round, baselines' final levels,
    the dataset's chance (dashed) and majority (dotted) floors; one legend for all panels."""
    import numpy as np
    from matplotlib.lines import Line2D

    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt_figure(4.3 * ncols, 3.3 * nrows, ncols=ncols, nrows=nrows)
    axes = np.atleast_1d(axes).ravel()
    metric = task_metrics(tasks)
    for ax, t in zip(axes, tasks):
        series = {s: _from_zero([(e["round"], e["downstream"][t]) for e in es if t in e["downstream"]],
                                (zero or {}).get("downstream", {}).get(t)) for s, es in evals.items()}
        _draw_lines(ax, series, styles, {k: v["per_task"][t]["score"] for k, v in base.items() if t in v["per_task"]})
        f = (floors or {}).get(t) or {}
        floor_lines(ax, f.get("chance"), f.get("majority"))
        floor = " / ".join("–" if f.get(k) is None else f"{f[k]:.1f}" for k in ("chance", "majority"))
        ax.set_title(f"{t}\nchance / majority: {floor if f else 'not recorded'}", fontsize=8)
        ax.set_xlabel(ROUNDS_X, fontsize=8)
        ax.set_ylabel(f"score (points, {metric[t] or 'task metric'})", fontsize=8)
    for ax in axes[len(tasks):]:
        ax.axis("off")
    names = list(dict.fromkeys([*evals, *base]))
    handles = [Line2D([], [], markerfacecolor="none", label=n, **style_of(styles, n)) for n in evals]
    handles += [Line2D([], [], ls=(0, (6, 2)), color=style_of(styles, n)["color"], label=f"{n} (final)")
                for n in names if n in base]
    handles += [Line2D([], [], color="black", ls=(0, (5, 3)), label="chance floor"),
                Line2D([], [], color="black", ls=(0, (1, 2)), label="majority floor")]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=7)
    fig.suptitle("Global model: downstream score per dataset and round", fontsize=10)
    save_figure(fig, path)


def _forgetting_plots(run_dir: Path, evals: dict, styles: dict, base: dict) -> list[str]:
    """F, F_rel and F_acc per round; round 0 is the base itself, 0 by definition."""
    out = []
    fs = {s: _from_zero([(e["round"], e["F"]) for e in es if "F" in e], 0.0) for s, es in evals.items()}
    _line_plot(fs, run_dir / "plots" / "rounds_forgetting.png", styles=styles,
               title="Forgetting per round: F = mean over upstream u of S(global, u) − S(base, u)\n"
                     "on the per-round upstream subsample; negative = forgetting",
               ylabel="F (points)", hlines={k: v["F"] for k, v in base.items()})
    out.append("rounds_forgetting.png")
    variants = round_variants(run_dir, evals)
    for key, title, ylabel in (
            ("F_rel", "Forgetting per round: F_rel = mean relative upstream change\n(% of the base score; base 0 left out)",
             "F_rel (% of base score)"),
            ("F_acc", "Forgetting per round: F_acc = F over the accuracy-metric upstream tasks\n(CIDEr-D left out)",
             "F_acc (points)")):
        series = {s: [(e["round"], e[key]) for e in es if e.get(key) is not None] for s, es in variants.items()}
        if any(series.values()):
            _line_plot({s: _from_zero(pts, 0.0) for s, pts in series.items() if pts},
                       run_dir / "plots" / f"rounds_forgetting_{key}.png", styles=styles, title=title, ylabel=ylabel,
                       hlines={k: v[key] for k, v in base.items() if v.get(key) is not None})
            out.append(f"rounds_forgetting_{key}.png")
    return out


def _drift_plots(run_dir: Path, rounds: dict, styles: dict) -> list[str]:
    if not any(r.get("drift") for rs in rounds.values() for r in rs):  # off: federated.instrument = false
        return []
    _drift_plot(rounds, run_dir / "plots" / "drift.png", styles)
    out = ["drift.png"]
    for s, rs in rounds.items():
        d = rs[-1].get("drift", {})
        key = "lora_dW.cosine_matrix" if d.get("lora_dW.cosine_matrix") else "all.cosine_matrix"
        if d.get(key):
            _heatmap(d[key], d.get("clients", list(range(len(d[key])))),
                     f"{s}: client-update cosine, round {rs[-1]['round']} ({key.split('.')[0]})",
                     run_dir / "plots" / f"cosine_{s}.png")
            out.append(f"cosine_{s}.png")
    return out


def build_plots(run_dir: Path, events: list[dict], systems: list[dict], floors: dict | None = None,
                styles: dict | None = None) -> list[str]:
    """Every per-round plot of the run (file names under ``plots/``, in report order)."""
    evals, rounds, losses = defaultdict(list), defaultdict(list), defaultdict(lambda: defaultdict(list))
    for e in events:
        if e.get("event") == "global_eval":
            evals[e["system"]].append(e)
        elif e.get("event") == "round":
            rounds[e["system"]].append(e)
        elif e.get("event") == "client_train":
            losses[e["system"]][e["round"]].append(e["train_loss"])
    styles = styles or system_styles(report_systems(systems, events))
    base = {s["system"]: s for s in systems if s["system"] in ("pooled", "local")}
    path = run_dir / "zeroshot.json"
    zero = read_json(path)["full"] if path.is_file() else None
    out = []
    if evals:
        out += _score_plots(run_dir, evals, zero, floors, styles, base)
        out += _forgetting_plots(run_dir, evals, styles, base)
    out += _drift_plots(run_dir, rounds, styles)
    if losses:
        series = {s: (sorted(r), [_mean(r[k]) for k in sorted(r)]) for s, r in losses.items()}
        _line_plot(series, run_dir / "plots" / "train_loss.png", styles=styles, xlabel="round",
                   title="Client training loss per round\nmean over the round's clients of their local training loss",
                   ylabel="training loss (cross-entropy per answer token, nats)")
        out.append("train_loss.png")
    return out
