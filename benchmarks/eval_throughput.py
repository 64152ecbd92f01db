"""Batched vs one-by-one greedy generation on tiny-llava-ov (one torch thread).

Generates answers for the same synthetic samples at batch 32 and at batch 1, ``--repeats`` times
interleaved (batched, one-by-one, batched, ...), checks that the answers agree, and prints as its
last line one JSON object: ``{"batch": 32, "batched_s": ..., "one_by_one_s": ..., "speedup": ...,
"speedup_cpu": ..., "target": 5.0, ...}``. Times are medians over the repeats; ``speedup`` is the
ratio of wall times, ``speedup_cpu`` that of this process's CPU times (`time.process_time`; one
torch thread), which a shared machine's load moves much less; ``pair_speedups`` the ratio within each repeat
(its two timings seconds apart); ``load_avg`` is the 1-minute load average after each repeat.

Then the same comparison the way fedmllm evaluates (`fedmllm.eval.evaluate`: one task at a time,
each with its own ``max_new_tokens``, ``--per-task`` test samples of each of the 12 twins):
``per_task_batched_s``, ``per_task_one_by_one_s``, ``per_task_speedup`` (medians over
``--per-task-repeats``, interleaved likewise) in the same JSON line.

Usage: ``python benchmarks/eval_throughput.py [--n 128] [--max-new-tokens 16] [--repeats 3]
[--per-task 64] [--per-task-repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def _timed(model, processor, samples, batch_size: int, max_new_tokens: int) -> tuple[list[str], float, float]:
    """(answers, wall seconds, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = generate(model, processor, samples, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return out, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="number of samples")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians are reported)")
    parser.add_argument("--per-task", type=int, default=64, help="test samples per task, per-task pass (0: skip)")
    parser.add_argument("--per-task-repeats", type=int, default=3)
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
    times: dict[str, list[float]] = {"batched": [], "batched_cpu": [], "single": [], "single_cpu": []}
    loads = []
    for rep in range(args.repeats):
        answers = {}
        for key, batch_size in (("batched", BATCH), ("single", 1)):
            answers[key], wall, cpu = _timed(model, processor, samples, batch_size, args.max_new_tokens)
            times[key].append(wall)
            times[f"{key}_cpu"].append(cpu)
        batched, single = answers["batched"], answers["single"]
        loads.append(round(os.getloadavg()[0], 2))
        print(f"repeat {rep + 1}: batch {BATCH} {times['batched'][-1]:.2f} s (cpu {times['batched_cpu'][-1]:.2f}), "
              f"batch 1 {times['single'][-1]:.2f} s (cpu {times['single_cpu'][-1]:.2f})", flush=True)
        mismatches = [i for i, (a, b) in enumerate(zip(batched, single)) if a != b]
        assert not mismatches, f"batched and one-by-one answers differ at {mismatches[:10]}"
    print(f"answers agree on all {len(samples)} samples; e.g. {batched[0]!r}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_task = _per_task(model, processor, args.per_task, args.per_task_repeats) if args.per_task > 0 else {}
    print(json.dumps({"batch": BATCH, "batched_s": round(med["batched"], 3), "one_by_one_s": round(med["single"], 3),
                      "speedup": round(med["single"] / med["batched"], 2),
                      "speedup_cpu": round(med["single_cpu"] / med["batched_cpu"], 2),
                      "pair_speedups": [round(s / b, 2) for s, b in zip(times["single"], times["batched"])],
                      "repeats": args.repeats, "load_avg": loads, **per_task, "target": TARGET}))


def _per_task(model, processor, n: int, repeats: int) -> dict:
    """Batched vs one-by-one as `evaluate` runs it: task by task, each with its own budget."""
    from fedmllm.data.synth import DOWNSTREAM, UPSTREAM

    by_task = {name: TASKS.get(name).load("test", n=n, seed=1) for name in DOWNSTREAM + UPSTREAM}
    times: dict[str, list[float]] = {"batched": [], "single": []}
    for rep in range(repeats):
        for key, batch_size in (("batched", BATCH), ("single", 1)):
            start = time.perf_counter()
            for name, samples in by_task.items():
                generate(model, processor, samples, batch_size=batch_size, max_new_tokens=TASKS.get(name).max_new_tokens)
            times[key].append(time.perf_counter() - start)
        print(f"per task, repeat {rep + 1}: batch {BATCH} {times['batched'][-1]:.2f} s, "
              f"batch 1 {times['single'][-1]:.2f} s ({n} samples x {len(by_task)} tasks)", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"per_task_n": n, "per_task_batched_s": round(med["batched"], 3),
            "per_task_one_by_one_s": round(med["single"], 3),
            "per_task_speedup": round(med["single"] / med["batched"], 2),
            "per_task_pair_speedups": [round(s / b, 2) for s, b in zip(times["single"], times["batched"])]}


if __name__ == "__main__":
    main()
