"""``fedmllm eval``: score a model on tasks, print a table, write ``scores.json``."""

from __future__ import annotations

import time
from pathlib import Path

from fedmllm.config import Config
from fedmllm.data.suite import check_tasks, load_task
from fedmllm.experiment import TEST_SEED_OFFSET
from fedmllm.runs import write_json


def run_eval(cfg: Config, model: str, tasks: list[str], n: int, batch_size: int, seed: int, out: str) -> dict:
    from fedmllm.eval import evaluate
    from fedmllm.models import build_model

    if not tasks:
        from fedmllm.errors import UserError

        raise UserError("--tasks is empty; name at least one task (fedmllm list shows them)")
    check_tasks(tasks)
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
    path = Path(out) / "scores.json"
    write_json(path, result)
    print(f"wrote {path}")
    return result
