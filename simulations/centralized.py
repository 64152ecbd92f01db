"""``fedmllm centralized``: the paper's single-site benchmark grid, models × methods × tasks.

For each model: zero-shot scores of the base on the downstream tests and upstream sets (once,
cached in the run directory). For each (method, downstream task) cell: tune a fresh copy with the
shared training loop, evaluate downstream and upstream, and record E, F, O. Finished cells are
files under ``cells/``; a killed grid resumes with ``--resume RUN_DIR`` and skips them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedmllm.config import Config, method_options
from fedmllm.experiment import ExperimentData, check_data, check_methods, derive_seed, fresh_copy, score
from fedmllm.metrics.efo import efo, forgetting_summary, task_metrics
from fedmllm.errors import UserError
from fedmllm.runs import RunDir, check_run_dir, write_json


def _cell_file(run: RunDir, model: str, method: str, task: str) -> Path:
    safe = model.replace("/", "__")
    return run.path / "cells" / f"{safe}__{method}__{task}.json"


def zero_shot(run: RunDir, cfg: Config, bundle, model_name: str, data: ExperimentData) -> dict[str, float]:
    """Base-model scores on every downstream test and upstream set (cached per model); the tasks'
    chance / majority floors (``floors.json``, once per run) beside them."""
    from fedmllm.eval.floors import ensure_floors

    ensure_floors(run.path, data, cfg.seed)
    path = run.path / "zeroshot" / f"{model_name.replace('/', '__')}.json"
    if path.is_file():
        return json.loads(path.read_text())["scores"]
    t0 = time.time()
    scores = score(bundle.model, bundle.processor, {**data.test, **data.upstream}, cfg.eval.batch_size)
    write_json(path, {"model": model_name, "scores": scores, "seconds": round(time.time() - t0, 2)})
    run.log({"event": "zeroshot", "model": model_name, "scores": scores})
    print(f"[{model_name}] zero-shot: " + ", ".join(f"{t} {s:.1f}" for t, s in scores.items()), flush=True)
    return scores


def run_cell(run: RunDir, cfg: Config, bundle, model_name: str, method: str, task: str,
             data: ExperimentData, base: dict[str, float]) -> dict:
    """Tune one (model, method, task) cell, evaluate it and write its result file."""
    from fedmllm.data.collate import encode_train
    from fedmllm.methods import apply_method, trainable_summary
    from fedmllm.training.loop import loop_config
    from fedmllm.training.loop import train_local

    options, lr = method_options(cfg, method)
    model, meth, _ = apply_method(fresh_copy(bundle), method, options, seed=cfg.seed)
    seed = derive_seed(cfg.seed, "centralized", model_name, method, task)
    t0 = time.time()
    stats = train_local(model, data.train[task], lambda b: encode_train(bundle.processor, b),
                        loop_config(cfg.train, lr=lr), seed=seed, progress=f"{model_name} {method} {task}")
    train_s = time.time() - t0
    tuned = score(model, bundle.processor, {task: data.test[task], **data.upstream}, cfg.eval.batch_size)
    up_tuned, up_base = {u: tuned[u] for u in data.upstream}, {u: base[u] for u in data.upstream}
    alt = {k: v for k, v in forgetting_summary(up_tuned, up_base, task_metrics(data.upstream)).items() if k != "F"}
    result = {
        "model": model_name, "method": method, "family": meth.family, "task": task, "lr": lr,
        "options": options, "seed": seed, "base_score": base[task], "tuned_score": tuned[task],
        **efo(base, tuned, task, list(data.upstream)), **alt,  # F_rel, F_acc (+ tasks left out)
        "upstream_tuned": up_tuned, "upstream_base": up_base,
        "train": {"steps": stats.steps, "examples": stats.examples, "loss_first": stats.loss_first,
                  "loss_last": stats.loss_last, "seconds": round(train_s, 2)},
        "trainable": trainable_summary(model), "seconds": round(time.time() - t0, 2),
    }
    adapter_dir = run.path / "adapters" / model_name.replace("/", "__") / method / task
    meth.save(model, adapter_dir)
    write_json(_cell_file(run, model_name, method, task), result)
    run.log({"event": "cell", **{k: result[k] for k in ("model", "method", "task", "tuned_score", "E", "F", "O")}})
    return result


def check_centralized(cfg: Config) -> dict:
    """Everything that can be wrong with the grid before any compute; returns the built models."""
    from fedmllm.models import build_model

    check_data(cfg)
    for key in ("models", "methods"):
        if not getattr(cfg.centralized, key):
            raise UserError(f"centralized.{key} is empty: the grid would have no cells; name at least one")
    bundles = {m: build_model(m, pretrained=cfg.model.pretrained, seed=cfg.seed) for m in cfg.centralized.models}
    for bundle in bundles.values():
        check_methods(bundle.model, cfg, cfg.centralized.methods)
    return bundles


def run_centralized(cfg: Config, out: str, resume: bool = False) -> Path:
    """Run (or resume) the grid; writes results.json / results.csv / report.md / plots."""
    from fedmllm.experiment import use_threads

    use_threads(cfg)
    check_run_dir(out, resume, cfg, "centralized")
    bundles = check_centralized(cfg)
    data = ExperimentData.load(cfg)  # a dataset that cannot load fails before the run directory exists
    with RunDir.create(out, cfg, "centralized", resume=resume) as run:  # closes the live trackers
        return _run_grid(run, cfg, bundles, data)


def _run_grid(run: RunDir, cfg: Config, bundles: dict, data: ExperimentData) -> Path:
    from fedmllm.report import build_reports

    tasks = cfg.centralized.tasks or cfg.data.downstream
    cells = [(m, meth, t) for m in cfg.centralized.models for meth in cfg.centralized.methods for t in tasks]
    print(f"centralized grid: {len(cells)} cells -> {run.path}", flush=True)
    results = []
    for model_name, bundle in bundles.items():
        base = zero_shot(run, cfg, bundle, model_name, data)
        for method in cfg.centralized.methods:
            for task in tasks:
                done = _cell_file(run, model_name, method, task)
                if done.is_file():
                    results.append(json.loads(done.read_text()))
                    continue
                r = run_cell(run, cfg, bundle, model_name, method, task, data, base)
                results.append(r)
                print(f"[{len(results)}/{len(cells)}] {model_name} {method:<11} {task:<18} "
                      f"score {r['tuned_score']:5.1f}  E {r['E']:+6.1f}  F {r['F']:+6.1f}  O {r['O']:+6.1f}"
                      f"  ({r['seconds']:.0f} s)", flush=True)
    write_results(run, results)
    build_reports([run.path])
    return run.path


def write_results(run: RunDir, results: list[dict]) -> None:
    """``results.json`` (every cell, full detail) and ``results.csv`` (one row per cell)."""
    from fedmllm.report.forgetting import cell_variants

    results = [cell_variants(r) for r in results]  # cells resumed from older runs gain F_rel / F_acc
    run.write_json("results.json", {"kind": "centralized", "cells": results})
    header = ["model", "method", "family", "task", "base_score", "tuned_score", "E", "F", "O", "F_rel", "F_acc"]
    lines = [",".join(header)]
    for r in results:
        vals = [r.get(h) for h in header]  # F_rel / F_acc: absent in old cells, None if undefined
        lines.append(",".join("" if v is None else str(round(v, 4)) if isinstance(v, float) else str(v)
                              for v in vals))
    from fedmllm.runs import atomic_write

    atomic_write(run.path / "results.csv", "\n".join(lines) + "\n")
