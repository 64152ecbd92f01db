"""The paper's claims against a run of configs/centralized/paper_claims.toml (a run over seeds).

    python benchmarks/paper_claims.py RUN_DIR     # prints the README table (markdown)

Each claim is a paired difference per seed (the same data and draws for both sides), averaged over
the downstream tasks, summarised as mean ± 95% t-interval over the seeds. Verdict: *reproduced*
when the interval lies on the claimed side of 0, *not reproduced* when it lies on the other side,
*inconclusive* when it holds 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedmllm.metrics.stats import Summary, summarize  # noqa: E402

SELECTIVE, REPARAM, ADDITIVE = "selective", "reparameterization", "additive"


def per_seed_cells(run: Path) -> dict[int, list[dict]]:
    meta = json.loads((run / "meta.json").read_text())
    if meta.get("kind") != "seeds" or meta.get("experiment") != "centralized":
        raise SystemExit(f"{run}: not a centralized run over seeds (run configs/centralized/paper_claims.toml)")
    out = {}
    for seed in meta["seeds"]:
        f = run / f"seed-{seed}" / "results.json"
        if f.is_file():
            out[seed] = json.loads(f.read_text())["cells"]
    if len(out) < 2:
        raise SystemExit(f"{run}: fewer than 2 finished seeds; a claim needs an interval")
    return out


def mean_over_tasks(cells: list[dict], key: str, methods: set[str]) -> float:
    xs = [c[key] for c in cells if c["method"] in methods]
    if not xs:
        raise SystemExit(f"no cells of {sorted(methods)} in the run")
    return sum(xs) / len(xs)


def diff(seeds: dict[int, list[dict]], key: str, a: set[str], b: set[str]) -> Summary:
    return summarize(mean_over_tasks(c, key, a) - mean_over_tasks(c, key, b) for c in seeds.values())


def verdict(s: Summary, sign: int = 1) -> str:
    side = s.excludes_zero()
    return "inconclusive" if side == 0 else "reproduced" if side == sign else "not reproduced"


def claims(seeds: dict[int, list[dict]]) -> list[tuple[str, str, str]]:
    cells = next(iter(seeds.values()))
    family = {c["method"]: c["family"] for c in cells}
    methods = set(family)
    rows = []
    d = diff(seeds, "F", {"lora"}, {"full_st"})
    rows.append(("(a) LoRA forgets less than Full-ST at the same learning rate", f"F(LoRA) − F(Full-ST) = {d.fmt()}",
                 verdict(d)))
    others = sorted(methods - {"full_st"})
    margins = {m: diff(seeds, "E", {"full_st"}, {m}) for m in others}
    closest = min(margins, key=lambda m: margins[m].mean)
    sides = [margins[m].excludes_zero() for m in others]
    v = "reproduced" if all(x == 1 for x in sides) else "not reproduced" if any(x == -1 for x in sides) else "inconclusive"
    rows.append(("(b) Full-ST specializes most", f"E(Full-ST) − E(m), smallest margin m = {closest}: "
                 f"{margins[closest].fmt()}", v))
    proj = diff(seeds, "E", {"lora@proj"}, {"lora"})
    alone = summarize(mean_over_tasks(c, "E", {"projector"}) for c in seeds.values())
    rows.append(("(c) tuning the projector matters for cross-modal reasoning",
                 f"E(LoRA + projector) − E(LoRA) = {proj.fmt()}; projector alone E = {alone.fmt()}", verdict(proj)))
    add = {m for m in methods if family[m] == ADDITIVE}
    rest = {m for m in methods if family[m] in (SELECTIVE, REPARAM)}
    o, f = diff(seeds, "O", add, rest), diff(seeds, "F", add, rest)
    rows.append(("(d) open question: additive vs selective + reparameterization (O = E + F)",
                 f"O(additive) − O(others) = {o.fmt()}; F: {f.fmt()}",
                 {1: "additive better", -1: "additive worse", 0: "no difference shown"}[o.excludes_zero()]))
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    seeds = per_seed_cells(Path(argv[0]))
    print(f"Seeds {sorted(seeds)}; mean ± 95% t-interval half-width (sd) over seeds, paired per seed, "
          "averaged over the downstream tasks.\n")
    print("| claim | measured | verdict |\n|---|---|---|")
    for claim, measured, v in claims(seeds):
        print(f"| {claim} | {measured} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
