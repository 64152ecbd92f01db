"""Batched vs one-by-one greedy generation on tiny-llava-ov (one torch thread).

Generates answers for the same synthetic samples at batch 32 and at batch 1, checks that the
answers agree, and prints as its last line one JSON object:
``{"batch": 32, "batched_s": ..., "one_by_one_s": ..., "speedup": ..., "target": 5.0}``.

Usage: ``python benchmarks/eval_throughput.py [--n 128] [--max-new-tokens 16]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fedmllm.data.registry import TASKS
from fedmllm.errors import UserError
from fedmllm.eval import generate
from fedmllm.models.registry import build_model

BATCH = 32
TARGET = 5.0


def _samples(n: int) -> list:
    from fedmllm.data.synth import DOWNSTREAM, UPSTREAM

    names = DOWNSTREAM + UPSTREAM
    per_task = -(-n // len(names))
    pool = [s for name in names for s in TASKS.get(name).load("test", n=per_task, seed=1)]
    # Interleave tasks so every batch mixes prompt lengths (as a real evaluation of a pool would).
    pool.sort(key=lambda s: (int(s.uid.rsplit("/", 1)[1]), s.task))
    return pool[:n]


def _timed(model, processor, samples, batch_size: int, max_new_tokens: int) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = generate(model, processor, samples, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="number of samples")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        bundle, source = build_model("tiny-llava-ov"), "shipped checkpoint"
    except UserError:
        bundle, source = build_model("tiny-llava-ov", pretrained=False), "random init (no checkpoint yet)"
    print(f"model tiny-llava-ov ({source}), {sum(p.numel() for p in bundle.model.parameters()):,} params",
          flush=True)
    samples = _samples(args.n)
    print(f"{len(samples)} samples from {len({s.task for s in samples})} tasks, "
          f"max_new_tokens={args.max_new_tokens}", flush=True)
    model, processor = bundle.model, bundle.processor
    _timed(model, processor, samples[:BATCH], BATCH, args.max_new_tokens)  # warm-up
    batched, batched_s = _timed(model, processor, samples, BATCH, args.max_new_tokens)
    print(f"batch {BATCH}: {batched_s:.2f} s", flush=True)
    single, single_s = _timed(model, processor, samples, 1, args.max_new_tokens)
    print(f"batch 1: {single_s:.2f} s", flush=True)
    mismatches = [i for i, (a, b) in enumerate(zip(batched, single)) if a != b]
    assert not mismatches, f"batched and one-by-one answers differ at {mismatches[:10]}"
    print(f"answers agree on all {len(samples)} samples; e.g. {batched[0]!r}", flush=True)
    print(json.dumps({"batch": BATCH, "batched_s": round(batched_s, 3), "one_by_one_s": round(single_s, 3),
                      "speedup": round(single_s / batched_s, 2), "target": TARGET}))


if __name__ == "__main__":
    main()
