"""Throughput of `train_local` against a bare torch loop on the same model and batches.

Both loops run the same algorithm (forward, backward, global-norm clipping, AdamW, cosine
schedule) for the same number of steps on the same precomputed batches, one torch thread. The
bare loop is the floor: any gap is the loop's own overhead (sampling, hooks, accelerate, loss
bookkeeping). Runs are interleaved (loop, bare, bare, loop, ...) after an untimed warm-up and
the median wall time per call is compared. The LAST line printed is one JSON object:
``{"ratio": loop_throughput / bare_throughput (worst method), ..., "target": 0.95}``.

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import get_cosine_schedule_with_warmup

from fedmllm.data.collate import encode_train
from fedmllm.data.registry import TASKS
from fedmllm.methods import apply_method, trainable_summary
from fedmllm.models.registry import build_model
from fedmllm.training import TrainConfig, train_local

TARGET = 0.95


def bare_loop(model, batches, cfg: TrainConfig) -> None:
    """The same training algorithm written as plainly as torch allows."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 0, cfg.steps)
    model.train()
    for step in range(cfg.steps):
        model(**batches[step % len(batches)]).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_method(name: str, model_name: str, batches, steps: int, repeats: int) -> dict:
    model, _, _ = apply_method(build_model(model_name, pretrained=False).model, name)
    cfg = TrainConfig(lr=1e-4, steps=steps, batch_size=1, max_grad_norm=1.0, precision="fp32")
    # Each "sample" is a whole precomputed batch, so the loop's collate is a lookup.
    run_loop = lambda: train_local(model, batches, lambda s: s[0], cfg, seed=0)  # noqa: E731
    run_bare = lambda: bare_loop(model, batches, cfg)  # noqa: E731
    run_loop(), run_bare()  # warm-up (allocator, kernels, lazy imports), not timed
    loop_s, bare_s = [], []
    for r in range(repeats):
        order = (("loop", run_loop), ("bare", run_bare)) if r % 2 == 0 else (("bare", run_bare), ("loop", run_loop))
        for label, fn in order:
            (loop_s if label == "loop" else bare_s).append(timed(fn))
        print(f"  {name} repeat {r + 1}/{repeats}: loop {loop_s[-1] / steps * 1e3:.1f} ms/step, "
              f"bare {bare_s[-1] / steps * 1e3:.1f} ms/step", flush=True)
    loop_med, bare_med = statistics.median(loop_s), statistics.median(bare_s)
    return {"ratio": bare_med / loop_med, "loop_ms_per_step": loop_med / steps * 1e3,
            "bare_ms_per_step": bare_med / steps * 1e3, "trainable": trainable_summary(model)["trainable"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llava-ov")
    parser.add_argument("--methods", default="lora,full_st")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    processor = build_model(args.model, pretrained=False).processor
    samples = TASKS.get("synth-scienceqa").load("train", n=4 * args.batch_size, seed=0)
    batches = [encode_train(processor, samples[i:i + args.batch_size])
               for i in range(0, len(samples), args.batch_size)]
    print(f"{args.model}: {len(batches)} batches of {args.batch_size}, {args.steps} steps, "
          f"{args.repeats} interleaved repeats, 1 thread", flush=True)
    per_method = {}
    for name in args.methods.split(","):
        per_method[name] = bench_method(name, args.model, batches, args.steps, args.repeats)
        print(f"{name}: ratio {per_method[name]['ratio']:.3f}", flush=True)
    result = {"ratio": min(m["ratio"] for m in per_method.values()), "methods": per_method,
              "model": args.model, "steps": args.steps, "repeats": args.repeats,
              "batch_size": args.batch_size, "device": "cuda" if torch.cuda.is_available() else "cpu",
              "target": TARGET}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
