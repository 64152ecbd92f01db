"""Report of a federated run, built from the run directory's files alone.

Tables: the partition (client × dataset counts); federated strategies against the ``pooled`` and
``local`` baselines per dataset (score and E), F (the paper's), F_rel (relative retention) and
F_acc (accuracy tasks only; `fedmllm.metrics.efo`) and mean O; communication totals; rankings.
Plots: the downstream score and the forgetting F, F_rel and F_acc over rounds, drift over rounds
(update norms, cosines, B-local dissimilarity, LoRA aggregation discrepancy), client-update cosine
heatmaps, train loss.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from fedmllm.metrics.efo import forgetting_summary, task_metrics
from fedmllm.report.forgetting import SHORT_DEFINITIONS, definitions, fmt, system_variants
from fedmllm.report.plotting import plt_figure, save_figure
from fedmllm.runs import atomic_write, read_events, read_json


def _client_columns(run_dir: Path) -> dict:
    """Each client's LoRA rank and budget where they vary (from the run's config.toml)."""
    from fedmllm.config import load_config
    from fedmllm.federated.heterogeneity import client_columns

    path = run_dir / "config.toml"
    return client_columns(load_config(path)) if path.is_file() else {}


def _baselines_line(run_dir: Path) -> str:
    """How the baselines trained (so pooled vs a strategy is read as data, not schedule)."""
    from fedmllm.config import load_config

    path = run_dir / "config.toml"
    if not path.is_file():
        return ""
    fed = load_config(path).federated
    if "baseline_schedule" not in path.read_text():  # written before the key existed: one run
        fed.baseline_schedule = "single"
    if fed.baseline_schedule == "rounds":
        return ("Baselines train with the clients' schedule (`federated.baseline_schedule = \"rounds\"`): per "
                "round a fresh optimizer at the round's constant learning rate, as many steps as the round's "
                "clients take together (pooled) or as the client takes (local), with the clients' seeds; "
                "pooled is FedAvg with one client holding the union.\n")
    return ("Baselines train in one run of all steps with warm-up and cosine decay "
            "(`federated.baseline_schedule = \"single\"`), unlike the clients' per-round constant rate.\n")


def _systems(run_dir: Path) -> list[dict]:
    order = {"pooled": 0, "local": 2}
    out = [read_json(p) for p in (run_dir / "systems").glob("*.json")]
    return sorted(out, key=lambda s: (order.get(s["system"], 1), s["system"]))


def comparison_table(systems: list[dict], zero: dict) -> str:
    tasks = list(zero["downstream"])
    lines = ["| system | kind | " + " | ".join(tasks) + " | F | F_rel (%) | F_acc | mean E | mean O |",
             "|" + "---|" * (len(tasks) + 7),
             "| base (zero-shot) | – | " + " | ".join(f"{zero['downstream'][t]:.1f}" for t in tasks) + " | – | – | – | – | – |"]
    for s in systems:
        cells = " | ".join(f"{s['per_task'][t]['score']:.1f} ({s['per_task'][t]['E']:+.1f})" for t in tasks)
        lines.append(f"| {s['system']} | {s['kind']} | {cells} | {s['F']:+.1f} | {fmt(s.get('F_rel'))} | "
                     f"{fmt(s.get('F_acc'))} | {s['E']:+.1f} | {s['O']:+.1f} |")
    return "\n".join(lines)


def _mean_error(rs: list[dict]) -> float | None:
    """Mean over rounds of the relative LoRA aggregation error (None where not measured)."""
    vals = [r["lora_aggregation_error_rel"] for r in rs if r.get("lora_aggregation_error_rel") is not None]
    return sum(vals) / len(vals) if vals else None


def communication_table(systems: list[dict], rounds: dict[str, list[dict]]) -> str:
    lines = ["| system | rounds | uploaded (MB) | downloaded (MB) | per client per round up (KB) | "
             "per client per round down (KB) | LoRA aggregation error (rel., mean over rounds) |",
             "|---|---|---|---|---|---|---|"]
    for s in systems:
        rs = rounds.get(s["system"], [])
        if not rs:
            continue
        up, down = sum(r["bytes_up"] for r in rs), sum(r["bytes_down"] for r in rs)
        n = sum(r["clients"] for r in rs) or 1
        err = _mean_error(rs)
        lines.append(f"| {s['system']} | {len(rs)} | {up / 1e6:.2f} | {down / 1e6:.2f} | {up / n / 1e3:.1f} | "
                     f"{down / n / 1e3:.1f} | {'–' if err is None else f'{err:.2e}'} |")
    return "\n".join(lines)


def personalized_table(systems: list[dict]) -> str:
    """Global model vs every client's own model on its local test split (the fairness view)."""
    lines = ["| system | global: mean downstream | own models: mean (per test sample) | mean (per client) "
             "| worst client | std | 10th percentile |", "|---|---|---|---|---|---|---|"]
    for s in systems:
        p = s.get("personalized")
        if not p:
            continue
        lines.append(f"| {s['system']} | {s['downstream_mean']:.1f} | {p['mean_weighted']:.1f} | "
                     f"{p['mean_unweighted']:.1f} | {p['worst']:.1f} (client {p['worst_client']}) | "
                     f"{p['std']:.1f} | {p['p10']:.1f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def ranking_table(systems: list[dict], rounds: dict[str, list[dict]]) -> str:
    """Systems ranked by each criterion (best first)."""
    def bytes_of(s):
        rs = rounds.get(s["system"], [])
        return sum(r["bytes_up"] + r["bytes_down"] for r in rs) if rs else None

    criteria = [("mean downstream score", lambda s: s["downstream_mean"], True),
                ("F, the paper's (less forgetting first)", lambda s: s["F"], True),
                ("F_rel, relative retention % (less forgetting first)", lambda s: s.get("F_rel"), True),
                ("F_acc, accuracy tasks only (less forgetting first)", lambda s: s.get("F_acc"), True),
                ("personalized mean (per client)", lambda s: (s.get("personalized") or {}).get("mean_unweighted"), True),
                ("LoRA aggregation error", lambda s: _mean_error(rounds.get(s["system"], [])), False),
                ("bytes up + down", bytes_of, False)]
    lines = ["| criterion | ranking (best first) |", "|---|---|"]
    for label, key, high in criteria:
        scored = [(key(s), s["system"]) for s in systems if key(s) is not None]
        scored.sort(key=lambda x: -x[0] if high else x[0])
        lines.append(f"| {label} | {' > '.join(f'{n} ({v:.3g})' for v, n in scored) or '–'} |")
    return "\n".join(lines)


def _line_plot(series: dict[str, tuple[list, list]], title: str, ylabel: str, path: Path,
               hlines: dict[str, float] | None = None) -> None:
    fig, ax = plt_figure(6.5, 4)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    for i, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls="--", lw=1, color=f"C{(len(series) + i) % 10}", label=f"{name} (final)")
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _drift_plot(rounds: dict[str, list[dict]], path: Path) -> None:
    keys = [("update_norm_mean", "mean client update norm"), ("cosine_pairwise_mean", "mean pairwise cosine"),
            ("b_local", "B-local dissimilarity"), ("lora_discrepancy", "LoRA aggregation discrepancy")]
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, label) in zip(axes.flat, keys):
        for system, rs in rounds.items():
            for prefix in (("",) if key == "lora_discrepancy" else ("all.", "lora_dW.")):
                ys = [r.get("drift", {}).get(prefix + key) for r in rs]
                if any(y is not None for y in ys):
                    ax.plot([r["round"] for r in rs], ys, marker="o", ms=3,
                            label=f"{system}{' ' + prefix.rstrip('.') if prefix else ''}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("round")
        ax.legend(fontsize=6)
    save_figure(fig, path)


def _heatmap(matrix: list[list[float]], clients: list[int], title: str, path: Path) -> None:
    import numpy as np

    fig, ax = plt_figure(4.8, 4)
    m = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(clients)), clients)
    ax.set_yticks(range(len(clients)), clients)
    ax.set_xlabel("client")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
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


def build_plots(run_dir: Path, events: list[dict], systems: list[dict]) -> list[str]:
    plots = run_dir / "plots"
    evals, rounds, losses = defaultdict(list), defaultdict(list), defaultdict(lambda: defaultdict(list))
    for e in events:
        if e.get("event") == "global_eval":
            evals[e["system"]].append(e)
        elif e.get("event") == "round":
            rounds[e["system"]].append(e)
        elif e.get("event") == "client_train":
            losses[e["system"]][e["round"]].append(e["train_loss"])
    final = {s["system"]: s for s in systems}
    base = {k: v for k, v in final.items() if k in ("pooled", "local")}
    out = []
    if evals:
        series = {s: ([e["round"] for e in es], [sum(e["downstream"].values()) / len(e["downstream"]) for e in es])
                  for s, es in evals.items()}
        _line_plot(series, "Global model: mean downstream score", "score (points)", plots / "rounds_downstream.png",
                   {k: v["downstream_mean"] for k, v in base.items()})
        out.append("rounds_downstream.png")
        fs = {s: ([e["round"] for e in es if "F" in e], [e["F"] for e in es if "F" in e]) for s, es in evals.items()}
        _line_plot(fs, "Forgetting: F over rounds (upstream change vs base)", "F (points)", plots / "rounds_forgetting.png",
                   {k: v["F"] for k, v in base.items()})
        out.append("rounds_forgetting.png")
        variants = round_variants(run_dir, evals)
        for key, title, ylabel in (("F_rel", "Forgetting: F_rel over rounds (relative change vs base)", "F_rel (% of base)"),
                                   ("F_acc", "Forgetting: F_acc over rounds (accuracy tasks only)", "F_acc (points)")):
            series = {s: ([e["round"] for e in es if e.get(key) is not None], [e[key] for e in es if e.get(key) is not None])
                      for s, es in variants.items()}
            if any(xs for xs, _ in series.values()):
                _line_plot(series, title, ylabel, plots / f"rounds_forgetting_{key}.png",
                           {k: v[key] for k, v in base.items() if v.get(key) is not None})
                out.append(f"rounds_forgetting_{key}.png")
        for s, es in evals.items():
            per = {t: ([e["round"] for e in es], [e["downstream"][t] for e in es]) for t in es[0]["downstream"]}
            _line_plot(per, f"{s}: downstream score per dataset", "score", plots / f"rounds_tasks_{s}.png")
            out.append(f"rounds_tasks_{s}.png")
    if any(r.get("drift") for rs in rounds.values() for r in rs):  # off: federated.instrument = false
        _drift_plot(rounds, plots / "drift.png")
        out.append("drift.png")
        for s, rs in rounds.items():
            d = rs[-1].get("drift", {})
            key = "lora_dW.cosine_matrix" if d.get("lora_dW.cosine_matrix") else "all.cosine_matrix"
            if d.get(key):
                _heatmap(d[key], d.get("clients", list(range(len(d[key])))),
                         f"{s}: client-update cosine, round {rs[-1]['round']} ({key.split('.')[0]})",
                         plots / f"cosine_{s}.png")
                out.append(f"cosine_{s}.png")
    if losses:
        series = {s: (sorted(r), [sum(r[k]) / len(r[k]) for k in sorted(r)]) for s, r in losses.items()}
        _line_plot(series, "Mean client training loss", "loss", plots / "train_loss.png")
        out.append("train_loss.png")
    return out


def build_federated_report(run_dir: Path) -> Path:
    """Write ``report.md`` and ``plots/`` for a federated run; returns the report path."""
    from fedmllm.data.partition import Partition

    events = list(read_events(run_dir))
    zero = read_json(run_dir / "zeroshot.json")["full"] if (run_dir / "zeroshot.json").is_file() else None
    # Runs from before F_rel / F_acc: computed from the stored upstream scores ("–" if absent).
    systems = [system_variants(s, (zero or {}).get("upstream")) for s in _systems(run_dir)]
    rounds = defaultdict(list)
    for e in events:
        if e.get("event") == "round":
            rounds[e["system"]].append(e)
    parts = [f"# Federated run — `{run_dir.name}`\n", _baselines_line(run_dir)]
    if (run_dir / "partition.json").is_file():
        part = Partition.from_json(read_json(run_dir / "partition.json"))
        parts += ["## Partition (training samples per client and dataset)\n", "```", part.counts_table(_client_columns(run_dir)), "```\n"]
    if zero and systems:
        parts += ["## Federated vs pooled vs local\n",
                  "Cells: score (E vs zero-shot), points. F = mean upstream change of the final model "
                  "(negative = forgetting); O = E + F, averaged over datasets.\n",
                  comparison_table(systems, zero), "", definitions(systems), ""]
    if rounds:
        parts += ["## Communication and LoRA aggregation\n",
                  "LoRA aggregation error: ||dW_global - sum_k p_k dW_k|| / ||sum_k p_k dW_k|| with "
                  "dW = R + s B A (0 for exact rules; FedIT's is the A/B averaging discrepancy).\n",
                  communication_table(systems, rounds), ""]
    table = personalized_table(systems)
    if table:
        parts += ["## Personalized evaluation\n",
                  "Every client's own model (global shared part + its local part) on its local test "
                  "split; 'per test sample' weights clients by their test sizes, 'per client' counts each "
                  "client once.\n", table, ""]
    if systems:
        parts += ["## Ranking\n", ranking_table(systems, rounds), "",
                  SHORT_DEFINITIONS, ""]
    from fedmllm.report.trust import trust_sections

    parts += trust_sections(run_dir, systems, events)
    failures = [e for e in events if e.get("event") == "client_failed"]
    if failures:
        parts.append(f"**Client failures:** {len(failures)} (see `metrics.jsonl`, event `client_failed`).\n")
    names = build_plots(run_dir, events, systems)
    if names:
        parts.append("## Over rounds\n")
        parts += [f"![{n[:-4]}](plots/{n})" for n in names]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(parts) + "\n")
    return path
