"""Is the large embedded base what edge collaboration needs: stronger upstream, faster downstream?

For ``tiny-llava-ov-large`` against the two small bases (``tiny-llava-ov``, ``tiny-vila``), all
measured in this run on the same samples with 1 torch thread:

- upstream: held-out upstream-twin scores (``--upstream-n`` per task, test split, seed 1);
- downstream learning speed: LoRA (r 8, alpha 16, lr 2e-3, batch 16, constant lr) on each of
  ``--tasks`` for ``--steps`` steps, the mean downstream score after every ``--every`` steps
  (0 = zero-shot), and seconds per step (the price of the larger model).

The LAST line printed is one JSON object with the per-model upstream means, the downstream
curves and the ratios large / small.

    .venv/bin/python benchmarks/large_base.py [--steps 60 --every 20]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny-llava-ov-large,tiny-llava-ov,tiny-vila")
    p.add_argument("--tasks", default="synth-scienceqa,synth-rsvqa,synth-chd")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--train-n", type=int, default=256)
    p.add_argument("--test-n", type=int, default=48)
    p.add_argument("--upstream-n", type=int, default=32)
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    from fedmllm.config import Config
    from fedmllm.data.collate import encode_train
    from fedmllm.data.suite import load_task
    from fedmllm.experiment import score
    from fedmllm.methods import apply_method
    from fedmllm.models import build_model
    from fedmllm.training.loop import loop_config, train_local

    cfg = Config()
    cfg.train.batch_size = 16
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    upstream = {t: load_task(t, "test", args.upstream_n, 1, cfg.data) for t in cfg.data.upstream}
    train = {t: load_task(t, "train", args.train_n, 0, cfg.data) for t in tasks}
    test = {t: load_task(t, "test", args.test_n, 0, cfg.data) for t in tasks}
    out: dict = {"models": {}}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        bundle = build_model(name)
        up = score(bundle.model, bundle.processor, upstream, 32)
        acc = [s for t, s in up.items() if "caption" not in t]
        curves, seconds = {}, []
        for task in tasks:
            import copy

            model, method, _ = apply_method(copy.deepcopy(bundle.model), "lora", {"r": 8, "alpha": 16}, seed=0)
            curve = [score(model, bundle.processor, {task: test[task]}, 32)[task]]
            for _ in range(args.steps // args.every):
                t0 = time.perf_counter()
                train_local(model, train[task], lambda b: encode_train(bundle.processor, b),
                            loop_config(cfg.train, lr=2e-3, steps=args.every, warmup_ratio=0.0, schedule="constant"),
                            seed=len(curve))
                seconds.append((time.perf_counter() - t0) / args.every)
                curve.append(score(model, bundle.processor, {task: test[task]}, 32)[task])
            curves[task] = curve
        mean_curve = [sum(c[i] for c in curves.values()) / len(curves) for i in range(len(next(iter(curves.values()))))]
        out["models"][name] = {
            "params": sum(p.numel() for p in bundle.model.parameters()),
            "upstream": up, "upstream_mean_accuracy": sum(acc) / len(acc),
            "downstream_curves": curves, "downstream_mean_curve": mean_curve,
            "seconds_per_step": sum(seconds) / len(seconds),
        }
        print(f"{name}: upstream accuracy mean {out['models'][name]['upstream_mean_accuracy']:.1f}; downstream mean "
              f"by {args.every} steps {[round(x, 1) for x in mean_curve]}; "
              f"{out['models'][name]['seconds_per_step']:.3f} s/step", flush=True)
    names = list(out["models"])
    large, smalls = names[0], names[1:]
    out["steps"], out["every"], out["tasks"] = args.steps, args.every, tasks
    out["ratios"] = {s: {
        "params": out["models"][large]["params"] / out["models"][s]["params"],
        "seconds_per_step": out["models"][large]["seconds_per_step"] / out["models"][s]["seconds_per_step"],
        "upstream_accuracy_gap": out["models"][large]["upstream_mean_accuracy"] - out["models"][s]["upstream_mean_accuracy"],
        "downstream_gain_gap_first_checkpoint": (out["models"][large]["downstream_mean_curve"][1]
                                                 - out["models"][large]["downstream_mean_curve"][0])
        - (out["models"][s]["downstream_mean_curve"][1] - out["models"][s]["downstream_mean_curve"][0]),
    } for s in smalls}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
