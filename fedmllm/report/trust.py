"""Report sections on trust: robustness to attackers, differential privacy, failed and late clients.

Built from the system results (``systems/<name>.json``: ``strategy``, ``attack``,
``noise_multiplier``, ``backdoor``) and the round events of ``metrics.jsonl`` (``rejected``,
``stragglers``, ``dp_epsilon``). Every section is empty when the run has nothing to show.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional

from fedmllm.report.plotting import legend_outside, plt_figure, save_figure, style_of, system_colours, system_styles

RETAINED = ("retained = the system's mean downstream score / clean FedAvg's, in percent (100 = as good as "
            "FedAvg without attackers)")


def _reference(systems: list[dict]) -> Optional[dict]:
    """Clean FedAvg (no attack, no DP), else the first clean system without DP."""
    clean = [s for s in systems if s.get("kind") == "strategy" and not s.get("attack")
             and s.get("noise_multiplier") is None]
    for s in clean:
        if s.get("strategy") == "fedavg":
            return s
    return clean[0] if clean else None


def _grid(systems: list[dict]) -> tuple[list[str], list[str], dict]:
    """(strategies, attacks with "" = clean first, (strategy, attack) -> result) of the systems
    without DP."""
    cells = {(s["strategy"], s.get("attack", "")): s for s in systems
             if s.get("kind") == "strategy" and s.get("noise_multiplier") is None and "strategy" in s}
    strategies = sorted(dict.fromkeys(k[0] for k in cells), key=lambda n: n != "fedavg")  # FedAvg first
    attacks = sorted({k[1] for k in cells}, key=lambda a: (a != "", a))
    return strategies, attacks, cells


def retained(system: dict, reference: dict) -> Optional[float]:
    ref = reference.get("downstream_mean")
    return None if not ref else 100.0 * system["downstream_mean"] / ref


def robustness_table(systems: list[dict]) -> str:
    """Strategies x attacks: retained % / F / backdoor success rate (backdoor column)."""
    ref = _reference(systems)
    strategies, attacks, cells = _grid(systems)
    if ref is None or not any(attacks):
        return ""
    head = [a or "clean" for a in attacks]
    lines = ["| strategy | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for strategy in strategies:
        row = []
        for attack in attacks:
            s = cells.get((strategy, attack))
            if s is None:
                row.append("–")
                continue
            r = retained(s, ref)
            cell = f"{r:.0f}% / F {s['F']:+.1f}" if r is not None else f"– / F {s['F']:+.1f}"
            if s.get("backdoor"):
                cell += f" / ASR {s['backdoor']['asr']:.0f}%"
            row.append(cell)
        lines.append(f"| {strategy} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def robustness_heatmap(systems: list[dict], path: Path) -> bool:
    """Heatmap of the retained score, strategies x attacks; False when there is no grid."""
    import numpy as np

    ref = _reference(systems)
    strategies, attacks, cells = _grid(systems)
    if ref is None or not any(attacks):
        return False
    m = np.array([[retained(cells[(s, a)], ref) if (s, a) in cells and retained(cells[(s, a)], ref) is not None
                   else np.nan for a in attacks] for s in strategies], dtype=float)
    fig, ax = plt_figure(1.3 * len(attacks) + 3, 0.5 * len(strategies) + 2)
    im = ax.imshow(m, cmap="RdYlGn", vmin=0, vmax=110, aspect="auto")
    ax.set_xticks(range(len(attacks)), [a or "clean" for a in attacks], rotation=30, ha="right")
    ax.set_yticks(range(len(strategies)), strategies)
    for i in range(len(strategies)):
        for j in range(len(attacks)):
            if not np.isnan(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("attack (20% of clients unless configured otherwise)")
    ax.set_ylabel("aggregation rule")
    ax.set_title(f"Clean downstream score retained (% of clean {ref['system']})")
    fig.colorbar(im, ax=ax, label="retained (%)")
    save_figure(fig, path)
    return True


def _final_epsilon(events: list[dict]) -> dict[str, float]:
    out = {}
    for e in events:
        if e.get("event") == "round" and "dp_epsilon" in e:
            out[e["system"]] = float(e["dp_epsilon"])
    return out


def privacy_table(systems: list[dict], events: list[dict]) -> str:
    """One row per DP system: z, final epsilon (at the configured delta), downstream, E, F."""
    eps = _final_epsilon(events)
    delta = next((e.get("dp_delta") for e in events if e.get("event") == "round" and "dp_delta" in e), None)
    rows = [s for s in systems if s.get("noise_multiplier") is not None]
    if not rows:
        return ""
    lines = [f"| system | noise multiplier z | epsilon (delta = {delta:g}) | mean downstream | mean E | F |"
             if delta else "| system | noise multiplier z | epsilon | mean downstream | mean E | F |",
             "|---|---|---|---|---|---|"]
    for s in rows:
        e = eps.get(s["system"])
        lines.append(f"| {s['system']} | {s['noise_multiplier']:g} | {'inf' if e is None or e == float('inf') else f'{e:.2f}'} | "
                     f"{s['downstream_mean']:.1f} | {s['E']:+.1f} | {s['F']:+.1f} |")
    return "\n".join(lines)


def privacy_plot(systems: list[dict], events: list[dict], path: Path) -> bool:
    """Downstream score and F against epsilon (log x), one line per strategy; z = 0 (no noise,
    epsilon infinite) drawn as a dashed level."""
    eps = _final_epsilon(events)
    rows = [s for s in systems if s.get("noise_multiplier") is not None and not s.get("attack")]
    if not rows:
        return False
    fig, axes = plt_figure(11, 4, ncols=2)
    by = defaultdict(list)
    for s in rows:
        by[s["strategy"]].append(s)
    colours = system_colours(list(by))
    for i, (key, label) in enumerate((("downstream_mean", "mean downstream score (points)"),
                                      ("F", "F: mean upstream change (points)"))):
        ax = axes[i]
        for strategy, rs in by.items():
            color = colours[strategy]
            finite = sorted((eps[s["system"]], s[key]) for s in rs
                            if s["system"] in eps and eps[s["system"]] != float("inf"))
            if finite:
                ax.plot([x for x, _ in finite], [y for _, y in finite], "o-", color=color, label=strategy)
            for s in rs:
                if eps.get(s["system"], float("inf")) == float("inf"):
                    ax.axhline(s[key], color=color, linestyle="--", label=f"{strategy}, no noise (epsilon = inf)")
        ax.set_xscale("log")
        ax.set_xlabel("epsilon after the last round (log scale)")
        ax.set_ylabel(label)
    legend_outside(axes[1])
    axes[0].set_title("Downstream score vs privacy budget\nfinal global model; smaller epsilon = more private", fontsize=9)
    axes[1].set_title("Forgetting vs privacy budget\nF = mean upstream change vs base; negative = forgetting", fontsize=9)
    save_figure(fig, path)
    return True


def failures_plot(events: list[dict], path: Path, styles: Optional[dict] = None) -> bool:
    """Per round and system: rejected replies and stragglers (late replies); False if none.
    ``styles``: the report's system styles (`plotting.system_styles`)."""
    rounds = defaultdict(list)
    for e in events:
        if e.get("event") == "round":
            rounds[e["system"]].append(e)
    if not any(e.get("rejected") or e.get("stragglers") for rs in rounds.values() for e in rs):
        return False
    styles = styles or system_styles(list(rounds))
    fig, axes = plt_figure(11, 4, ncols=2)
    for system, rs in rounds.items():
        xs = [e["round"] for e in rs]
        for ax, key in ((axes[0], "rejected"), (axes[1], "stragglers")):
            ax.plot(xs, [e.get(key, 0) for e in rs], ms=5, markerfacecolor="none", label=system,
                    **style_of(styles, system))
    for ax, title in ((axes[0], "Rejected replies per round\n(failed the reply check: never aggregated)"),
                      (axes[1], "Stragglers per round\n(no reply within federated.round_timeout_s)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylabel("clients (count)")
    legend_outside(axes[1])
    save_figure(fig, path)
    return True


def trust_sections(run_dir: Path, systems: list[dict], events: list[dict],
                   styles: Optional[dict] = None) -> list[str]:
    """The report's robustness, privacy and failure sections (markdown lines; [] if none apply);
    ``styles``: the report's system styles, so a system looks the same as in its other plots."""
    parts: list[str] = []
    plots = run_dir / "plots"
    table = robustness_table(systems)
    if table:
        parts += ["## Robustness to attackers\n",
                  f"Cells: {RETAINED} / F of the final model / for the backdoor, the attack success rate "
                  "(ASR: triggered test images answered with the target). The same partitions attack in "
                  "every system.\n", table, ""]
        if robustness_heatmap(systems, plots / "robustness.png"):
            parts.append("![robustness](plots/robustness.png)\n")
    table = privacy_table(systems, events)
    if table:
        parts += ["## Differential privacy\n",
                  "User-level DP: each client's update clipped to the clipping norm, clients averaged "
                  "uniformly, Gaussian noise of std z x C / m added to the mean (m clients); epsilon from "
                  "the RDP accountant after the last round.\n", table, ""]
        if privacy_plot(systems, events, plots / "privacy.png"):
            parts.append("![privacy](plots/privacy.png)\n")
    if failures_plot(events, plots / "failures.png", styles):
        parts += ["## Rejected and late clients\n", "![failures](plots/failures.png)\n"]
    return parts
