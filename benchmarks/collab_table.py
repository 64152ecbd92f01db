"""README's edge-collaboration table, printed from a `fedmllm collab` run directory.

    .venv/bin/python benchmarks/collab_table.py RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(x, spec="+.1f", scale=1.0):
    return "–" if x is None else format(x * scale, spec)


def main(run: str) -> None:
    systems = json.loads((Path(run) / "results.json").read_text())["systems"]
    print("| system | family | large E | large F | large F_acc | small E | small F | small own models | "
          "gap closed | KB up / client / round | client s / round |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in systems:
        lg, sm = s.get("large") or {}, s.get("small") or {}
        pers = (s.get("personalized") or {}).get("mean_weighted")
        up = s.get("bytes_up_per_client_round")
        print(f"| {s['system']} | {s['family']} | {fmt(lg.get('E'))} | {fmt(lg.get('F'))} | {fmt(lg.get('F_acc'))} | "
              f"{fmt(sm.get('E'))} | {fmt(sm.get('F'))} | {fmt(pers, '.1f')} | {fmt(s.get('gap_closed'), '.1%', 1.0)} | "
              f"{fmt(None if up is None else up / 1000, '.1f')} | {fmt(s.get('client_seconds_mean'), '.2f')} |")


if __name__ == "__main__":
    main(sys.argv[1])
