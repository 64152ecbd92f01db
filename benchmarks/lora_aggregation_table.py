"""README's LoRA-aggregation table, printed from a run directory of
``configs/federated/lora_aggregation.toml`` (so the table is what the run produced).

    .venv/bin/fedmllm federated --config configs/federated/lora_aggregation.toml --out runs/lora
    .venv/bin/python benchmarks/lora_aggregation_table.py runs/lora
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from fedmllm.config import load_config
from fedmllm.federated.heterogeneity import client_ranks


def _ranks(cfg, system: str) -> str:
    if system == "pooled":
        return f"r = {cfg.methods['lora']['r']}"
    ranks = client_ranks(cfg, None if system == "local" else system)
    return f"r = {cfg.methods['lora']['r']}" if ranks is None else "/".join(map(str, sorted(set(ranks))))


def table(run: Path) -> str:
    cfg = load_config(run / "config.toml")
    results = json.loads((run / "results.json").read_text())
    rounds = defaultdict(list)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "round":
            rounds[event["system"]].append(event)
    lines = ["| system | client ranks | mean downstream | mean E | F | own models: mean per client / worst | "
             "LoRA aggregation error (rel., mean) | MB up + down |", "|---|---|---|---|---|---|---|---|"]
    for s in results["systems"]:
        rs = rounds.get(s["system"], [])
        errs = [r["lora_aggregation_error_rel"] for r in rs if r.get("lora_aggregation_error_rel") is not None]
        p = s.get("personalized") or {}
        cells = [s["system"], _ranks(cfg, s["system"]), f"{s['downstream_mean']:.1f}", f"{s['E']:+.1f}",
                 f"{s['F']:+.1f}", f"{p['mean_unweighted']:.1f} / {p['worst']:.1f}" if p else "–",
                 f"{sum(errs) / len(errs):.1e}" if errs else "–",
                 f"{sum(r['bytes_up'] + r['bytes_down'] for r in rs) / 1e6:.1f}" if rs else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: lora_aggregation_table.py RUN_DIR")
    print(table(Path(sys.argv[1])))
