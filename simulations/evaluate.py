"""``fedmllm eval``: score a model on tasks, print a table, write ``scores.json``."""

from __future__ import annotations

import time
from pathlib import Path

from fedmllm.config import SEED_LIMIT, Config
from fedmllm.data.suite import check_request, check_tasks, load_task
from fedmllm.errors import UserError
from fedmllm.experiment import TEST_SEED_OFFSET
from fedmllm.runs import check_writable, write_json

MAX_N = 10**6  # test samples per task, as config key data.test_n


def run_eval(cfg: Config, model: str, tasks: list[str], n: int, batch_size: int, seed: int, out: str) -> dict:
    from fedmllm.eval import evaluate
    from fedmllm.models import build_model
    from fedmllm.experiment import use_threads

    use_threads(cfg)

    if not tasks:
        raise UserError("--tasks is empty; name at least one task (fedmllm list shows them)")
    for flag, value, lo, hi in (("--n", n, 1, MAX_N), ("--batch-size", batch_size, 1, MAX_N),
                                ("--seed", seed, 0, SEED_LIMIT - 1)):
        if not lo <= value <= hi:
            raise UserError(f"{flag} must be in [{lo}, {hi:,}], got {value:,}")
    path = Path(out) / "scores.json"
    if path.exists():
        raise UserError(f"{path} already exists; choose another --out (eval never overwrites scores)")
    check_writable(out)
    check_tasks(tasks)
    for t in tasks:
        check_request(t, "test", n, cfg.data, "--n")
    bundle = build_model(model, pretrained=cfg.model.pretrained, seed=seed)
    sets = {t: load_task(t, "test", n, seed + TEST_SEED_OFFSET, cfg.data) for t in tasks}
    t0 = time.perf_counter()
    scores = evaluate(bundle.model, bundle.processor, sets, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    width = max(len(t) for t in tasks)
    print(f"{'task':<{width}}  {'metric':<13} {'n':>5}  score")
    for t, s in scores.items():
        print(f"{t:<{width}}  {s.metric:<13} {s.n:>5}  {s.score:6.2f}")
    print(f"{'mean':<{width}}  {'':<13} {'':>5}  {sum(s.score for s in scores.values()) / len(scores):6.2f}"
          f"   ({seconds:.1f} s)")
    result = {"model": model, "n": n, "seed": seed, "seconds": round(seconds, 2),
              "scores": {t: {"metric": s.metric, "score": s.score, "n": s.n, "sub": s.scores} for t, s in scores.items()}}
    write_json(path, result)
    print(f"wrote {path}")
    return result
