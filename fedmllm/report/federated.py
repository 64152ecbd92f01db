"""Report of a federated run, built from the run directory's files alone.

Tables: the partition (client × dataset counts); federated strategies against the ``pooled`` and
``local`` baselines per dataset (score and E), F (the paper's), F_rel (relative retention) and
F_acc (accuracy tasks only; `fedmllm.metrics.efo`) and mean O, with each dataset's chance /
majority floors (``floors.json``) and scores below chance marked; F broken down per upstream task;
communication totals; rankings.
Plots: `fedmllm.report.rounds` (per round, from round 0 = the zero-shot base; one style per system).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from fedmllm.metrics.efo import task_metrics
from fedmllm.report.floors import floors_row, legend, mark, read_floors
from fedmllm.report.forgetting import SHORT_DEFINITIONS, definitions, fmt, system_variants
from fedmllm.report.plotting import system_styles
from fedmllm.report.rounds import build_plots, report_systems
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


def comparison_table(systems: list[dict], zero: dict, floors: dict | None = None) -> str:
    """Systems × downstream datasets (score and E), F, F_rel, F_acc, mean E and O; the zero-shot
    base and, where recorded, the floors as rows; a score below its dataset's chance marked."""
    tasks = list(zero["downstream"])
    down = zero["downstream"]
    lines = ["| system | kind | " + " | ".join(tasks) + " | F | F_rel (%) | F_acc | mean E | mean O |",
             "|" + "---|" * (len(tasks) + 7),
             "| base (zero-shot) | – | " + " | ".join(f"{down[t]:.1f}{mark(down[t], floors, t)}" for t in tasks)
             + " | – | – | – | – | – |"]
    if floors is not None:
        lines.append("| *floors* | *chance / majority* | " + " | ".join(floors_row(floors, tasks)) + " |" + " – |" * 5)
    for s in systems:
        cells = " | ".join(f"{s['per_task'][t]['score']:.1f}{mark(s['per_task'][t]['score'], floors, t)} "
                           f"({s['per_task'][t]['E']:+.1f})" for t in tasks)
        lines.append(f"| {s['system']} | {s['kind']} | {cells} | {s['F']:+.1f} | {fmt(s.get('F_rel'))} | "
                     f"{fmt(s.get('F_acc'))} | {s['E']:+.1f} | {s['O']:+.1f} |")
    return "\n".join(lines)


def upstream_table(systems: list[dict], zero: dict, floors: dict | None = None) -> str:
    """F per upstream task: S(final, u) − S(base, u) per system (its score in brackets), from the
    stored final scores; the zero-shot base and the floors as rows. "" without upstream scores."""
    base = zero.get("upstream") or {}
    ups = [u for u in base if any(u in (s.get("upstream") or {}) for s in systems)]
    if not ups:
        return ""
    metric = task_metrics(ups)
    lines = ["| system | " + " | ".join(f"{u} ({metric[u] or '?'})" for u in ups) + " | F (mean) |",
             "|" + "---|" * (len(ups) + 2),
             "| base (zero-shot) | " + " | ".join(f"{base[u]:.1f}{mark(base[u], floors, u)}" for u in ups) + " | – |"]
    if floors is not None:
        lines.append("| *floors: chance / majority* | " + " | ".join(floors_row(floors, ups)) + " | – |")
    for s in systems:
        up = s.get("upstream") or {}
        cells = [f"{up[u] - base[u]:+.1f} ({up[u]:.1f}{mark(up[u], floors, u)})" if u in up else "–" for u in ups]
        lines.append(f"| {s['system']} | " + " | ".join(cells) + f" | {s['F']:+.1f} |")
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


def result_sections(systems: list[dict], zero: dict, floors: dict | None) -> list[str]:
    """The comparison table with its floors and definitions, and F per upstream task."""
    parts = ["## Federated vs pooled vs local\n",
             "Cells: score (E vs zero-shot), points. F = mean upstream change of the final model "
             "(negative = forgetting); O = E + F, averaged over datasets.\n",
             comparison_table(systems, zero, floors), "", legend(floors, zero["downstream"]), "", definitions(systems), ""]
    table = upstream_table(systems, zero, floors)
    if table:
        parts += ["## Forgetting per upstream task\n",
                  "Cells: S(final, u) − S(base, u) in points (the final score in brackets), on the full upstream "
                  "sets; F is their mean, so a large-scale metric (CIDEr-D × 100) weighs most. A score at its "
                  "floor has nothing left to forget.\n", table, ""]
    return parts


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
    floors = read_floors(run_dir)
    styles = system_styles(report_systems(systems, events))  # one style per system in every panel
    if zero and systems:
        parts += result_sections(systems, zero, floors)
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

    parts += trust_sections(run_dir, systems, events, styles)
    failures = [e for e in events if e.get("event") == "client_failed"]
    if failures:
        parts.append(f"**Client failures:** {len(failures)} (see `metrics.jsonl`, event `client_failed`).\n")
    names = build_plots(run_dir, events, systems, floors, styles)
    if names:
        parts.append("## Over rounds\n")
        parts += [f"![{n[:-4]}](plots/{n})" for n in names]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(parts) + "\n")
    return path
