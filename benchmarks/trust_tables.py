"""README's robustness and privacy tables, printed from the run directories that produced them
(the same functions write the run's report, `fedmllm.report.trust`).

    .venv/bin/fedmllm federated --config configs/federated/robustness.toml --out runs/robustness
    .venv/bin/fedmllm federated --config configs/federated/dp.toml --out runs/dp
    .venv/bin/python benchmarks/trust_tables.py runs/robustness runs/dp
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedmllm.report.trust import privacy_table, robustness_table
from fedmllm.runs import read_events


def tables(run: Path) -> str:
    systems = json.loads((run / "results.json").read_text())["systems"]
    events = list(read_events(run))
    return "\n\n".join(t for t in (robustness_table(systems), privacy_table(systems, events)) if t)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"<!-- {Path(arg).name} -->\n{tables(Path(arg))}\n")
