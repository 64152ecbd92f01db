"""README's demo tables, printed from a `make demo` run directory (a demo over seeds).

    python benchmarks/demo_tables.py runs/demo-<timestamp>

Prints the centralized table (score and E / F / O per method and task, mean ± 95% CI over the
seeds, the tasks' chance / majority floors under the scores), the federated tables (mean E, F,
own models per system; the global model's score per task with its floors) and the paired
differences the demo report makes; README's "What the demo shows" is this output, so it cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _get(summary: dict | None, spec: str = "+.1f") -> str:
    if not summary:
        return "–"
    mean, half = summary["mean"], summary["ci95_half"]
    text = format(mean, spec)
    return text if half is None else f"{text} ± {format(half, spec.lstrip('+'))}"


def _floors(half: dict, tasks: list[str]) -> list[str]:
    """"chance / majority" per task (means over the seeds; the floors depend on the data only)."""
    def one(t: str) -> str:
        f = half.get("floors", {}).get(t) or {}
        vals = [f.get(k) for k in ("chance", "majority")]
        return " / ".join("–" if v is None else f"{v['mean']:.1f}" for v in vals)
    return [one(t) for t in tasks]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/demo_tables.py RUN_DIR", file=sys.stderr)
        return 2
    results = json.loads((Path(argv[0]) / "results.json").read_text())
    if results.get("kind") != "seeds":
        print(f"{argv[0]}: not a run over seeds (results.json kind {results.get('kind')!r})", file=sys.stderr)
        return 2
    print(f"Seeds: {', '.join(map(str, results['finished']))}; mean ± 95% CI half-width over seeds.\n")
    cen = results["halves"].get("centralized")
    if cen:
        rows = {tuple(r["row"]): r for r in cen["rows"]}
        cells = [k for k in rows if k[0] == "cell"]
        tasks = list(dict.fromkeys(k[3] for k in cells))
        methods = list(dict.fromkeys(k[2] for k in cells))
        print("| method | " + " | ".join(f"{t}: score | E | F" for t in tasks) + " | mean O |")
        print("|---|" + "---|---|---|" * len(tasks) + "---|")
        for m in methods:
            parts = []
            for t in tasks:
                r = rows.get(("cell", cells[0][1], m, t), {})
                parts += [_get(r.get("score"), ".1f"), _get(r.get("E")), _get(r.get("F"))]
            summary = next(r for k, r in rows.items() if k[0] == "method" and k[2] == m)
            print(f"| {m} | " + " | ".join(parts) + f" | {_get(summary.get('O'))} |")
        print("| *chance / majority* | " + " | ".join(c for f in _floors(cen, tasks) for c in (f, "", "")) + " | |")
        print()
    fed = results["halves"].get("federated")
    if fed:
        rows = {tuple(r["row"]): r for r in fed["rows"]}
        print("| system | mean E | F | F_acc | own models (weighted mean) |\n|---|---|---|---|---|")
        for k, r in rows.items():
            if k[0] == "system":
                print(f"| {k[1]} | {_get(r.get('E'))} | {_get(r.get('F'))} | {_get(r.get('F_acc'))} | "
                      f"{_get(r.get('personalized'), '.1f')} |")
        print()
        cells = [k for k in rows if k[0] == "system_task"]
        tasks = list(dict.fromkeys(k[2] for k in cells))
        if tasks:
            print("| system: final global model's score | " + " | ".join(tasks) + " |\n|---|" + "---|" * len(tasks))
            for system in dict.fromkeys(k[1] for k in cells):
                print(f"| {system} | " + " | ".join(_get(rows.get(("system_task", system, t), {}).get("score"), ".1f")
                                                    for t in tasks) + " |")
            print("| *chance / majority* | " + " | ".join(_floors(fed, tasks)) + " |")
            print()
    print("| paired difference (A − B) | ΔE | ΔF | ΔO |\n|---|---|---|---|")
    for half in (cen, fed):
        for p in (half or {}).get("paired", []):
            print(f"| {p['a']} − {p['b']} | {_get(p['E'])} | {_get(p['F'])} | {_get(p['O'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
