"""One experiment over several seeds: ``seeds = [0, 1, 2]`` in a config (or ``--seeds 0,1,2``).

Each seed runs the unchanged experiment into its own sub-run ``<run>/seed-<s>/`` (a complete run
directory of its kind, ``seed`` replaced, its own report); the parent run directory (kind
``seeds``) holds the config with the seed list, and a report of mean, std and 95% t-intervals over
the seeds, with paired differences for the comparisons the report makes
(`fedmllm.report.seeds`). ``--resume`` continues per seed: finished seeds are skipped, a killed one
resumes where it stopped (its own resume), the rest start.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Callable

from fedmllm.config import Config
from fedmllm.runs import RunDir, check_run_dir, read_json, write_json

KIND = "seeds"


def _runners() -> dict[str, tuple[Callable, Callable]]:
    """kind -> (validate(cfg), run(cfg, out, resume)) of the single-seed experiments."""
    from simulations.centralized import check_centralized, run_centralized
    from simulations.collab import check_collab, run_collab
    from simulations.demo import check_demo, run_demo
    from simulations.federated import check_federated, run_federated

    return {"centralized": (check_centralized, run_centralized), "federated": (check_federated, run_federated),
            "collab": (check_collab, run_collab), "demo": (check_demo, run_demo)}


def seed_config(cfg: Config, seed: int) -> Config:
    """The config of one seed's sub-run: ``seed`` replaced, no seed list."""
    return dataclasses.replace(cfg, seed=seed, seeds=[])


def sub_run(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / f"seed-{seed}"


def finished(path: Path, kind: str) -> bool:
    """Whether a sub-run of ``kind`` ended (its results are written)."""
    if kind == "demo":
        return (path / "timing.json").is_file()
    return (path / "results.json").is_file()


def run_experiment(kind: str, cfg: Config, out: str, resume: bool = False) -> Path:
    """One run of ``kind``, or with ``cfg.seeds`` one sub-run per seed and the report over them."""
    if kind not in _runners():
        raise ValueError(f"run_experiment: unknown kind {kind!r}")
    if not cfg.seeds:
        return _runners()[kind][1](cfg, out, resume=resume)
    return run_seeds(kind, cfg, out, resume=resume)


def run_seeds(kind: str, cfg: Config, out: str, resume: bool = False) -> Path:
    from fedmllm.errors import UserError
    from fedmllm.experiment import use_threads
    from fedmllm.report import build_report

    check, run_one = _runners()[kind]
    use_threads(cfg)
    path = check_run_dir(out, resume, cfg, KIND)
    if resume:
        meta = read_json(path / "meta.json")
        if meta.get("experiment") != kind:
            raise UserError(f"cannot resume {path}: it holds {meta.get('experiment')!r} runs over seeds, not {kind!r}")
    check(seed_config(cfg, cfg.seeds[0]))  # everything a seed's run needs, before the run directory exists
    t0 = time.perf_counter()
    with RunDir.create(out, cfg, KIND, resume=resume) as run:
        if not resume:
            write_json(run.path / "meta.json", {**read_json(run.path / "meta.json"), "experiment": kind,
                                                "seeds": list(cfg.seeds)})
        for i, seed in enumerate(cfg.seeds):
            sub = sub_run(run.path, seed)
            if finished(sub, kind):
                print(f"== seed {seed} ({i + 1}/{len(cfg.seeds)}): finished before, kept ==", flush=True)
                continue
            again = (sub / "config.toml").is_file()
            if sub.exists() and not again:  # killed while creating it: it holds nothing of a run yet
                shutil.rmtree(sub)
            print(f"== seed {seed} ({i + 1}/{len(cfg.seeds)}){' resumed' if again else ''} -> {sub} ==", flush=True)
            run_one(seed_config(cfg, seed), str(sub), resume=again)
            run.log({"event": "seed_done", "seed": seed, "seconds": round(time.perf_counter() - t0, 1)})
        report = build_report(run.path)
    print(f"{len(cfg.seeds)} seeds finished; report over seeds: {report}", flush=True)
    return run.path
