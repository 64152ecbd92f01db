"""A centralized cell alone vs with one competing CPU-bound job of the same kind.

A research machine is rarely idle. The cell is what ``fedmllm centralized`` runs for one
(model, method, task): LoRA training of the shipped tiny-llava-ov on synth-chd through
`train_local`, then its evaluation. Each measurement starts worker processes (this script with
``--worker``) that build everything, wait at a barrier file, and time only the cell:

- alone: one worker;
- contended: two identical workers at once (the competitor is the same cell);

for torch's default intra-op threads (one per core) and for ``threads = 1`` (fedmllm's default,
`fedmllm.experiment.use_threads`). The slowdown is contended / alone seconds of the same thread
setting, both measured in this run. The LAST line printed is one JSON object:
``{"slowdown": <threads=1 slowdown>, "slowdown_default_threads": ..., "target": 2.5, ...}``.

    .venv/bin/python benchmarks/contention.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 2.5


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from fedmllm.data.collate import encode_train
    from fedmllm.data.registry import TASKS
    from fedmllm.experiment import score
    from fedmllm.methods import apply_method
    from fedmllm.models.registry import build_model
    from fedmllm.training import TrainConfig, train_local

    bundle = build_model("tiny-llava-ov")
    model, _, _ = apply_method(bundle.model, "lora", {"r": 8, "alpha": 16}, seed=0)
    train = TASKS.get("synth-chd").load("train", n=128, seed=0)
    test = {"synth-chd": TASKS.get("synth-chd").load("test", n=32, seed=0)}
    cfg = TrainConfig(lr=2e-3, steps=args.steps, batch_size=16, precision="fp32")
    barrier = Path(args.barrier)
    (barrier.parent / f"ready-{os.getpid()}").touch()
    while not barrier.exists():  # start together
        time.sleep(0.01)
    t0 = time.perf_counter()
    train_local(model, train, lambda b: encode_train(bundle.processor, b), cfg, seed=0)
    score(model, bundle.processor, test, 32)
    print(json.dumps({"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}), flush=True)


def measure(n_workers: int, threads: int, steps: int) -> float:
    """Seconds of the first worker's cell when ``n_workers`` run it at once."""
    with tempfile.TemporaryDirectory() as tmp:
        barrier = Path(tmp) / "go"
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(key, None)  # torch's default threads unless --threads says otherwise
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--threads", str(threads),
                                   "--steps", str(steps), "--barrier", str(barrier)],
                                  stdout=subprocess.PIPE, text=True, env=env) for _ in range(n_workers)]
        try:
            while len(list(Path(tmp).glob("ready-*"))) < n_workers:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a worker exited before the barrier")
                time.sleep(0.05)
            barrier.touch()
            outs = [p.communicate(timeout=1800)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        return json.loads(outs[0].strip().splitlines()[-1])["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--barrier", default="")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    out = {"cores": os.cpu_count(), "steps": args.steps, "target": TARGET}
    for label, threads in (("threads1", 1), ("default_threads", 0)):
        alone = measure(1, threads, args.steps)
        contended = measure(2, threads, args.steps)
        out[f"{label}_alone_s"], out[f"{label}_contended_s"] = round(alone, 2), round(contended, 2)
        out[f"{label}_slowdown"] = round(contended / alone, 3)
        print(f"{label}: alone {alone:.1f} s, with a competing cell {contended:.1f} s "
              f"({contended / alone:.2f}x)", flush=True)
    out["slowdown"] = out["threads1_slowdown"]
    out["slowdown_default_threads"] = out["default_threads_slowdown"]
    out["pass"] = out["slowdown"] <= TARGET
    print(json.dumps(out))


if __name__ == "__main__":
    main()
