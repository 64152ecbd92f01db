"""``fedmllm demo`` (what ``make demo`` runs): the embedded centralized benchmark and a federated
comparison with its pooled and local baselines, in one run directory with one report.
``--resume DIR`` continues a killed demo: a finished half is kept, a killed one resumes."""

from __future__ import annotations

import time
from pathlib import Path

from fedmllm.config import Config
from fedmllm.runs import RunDir, check_run_dir, read_json


def check_demo(cfg: Config) -> None:
    """Both halves are validated before any compute."""
    from simulations.centralized import check_centralized
    from simulations.federated import check_federated

    check_federated(cfg)
    check_centralized(cfg)


def run_demo(cfg: Config, out: str, resume: bool = False) -> Path:
    from fedmllm.report import build_report
    from simulations.centralized import run_centralized
    from simulations.federated import run_federated

    check_run_dir(out, resume, cfg, "demo")
    check_demo(cfg)
    run = RunDir.create(out, cfg, "demo", resume=resume)
    t0 = time.perf_counter()
    before = read_json(run.path / "timing.json")["seconds"] if (run.path / "timing.json").is_file() else 0.0
    halves = (("centralized", run_centralized, {}), ("federated", run_federated, {"checked": True}))
    for i, (name, runner, kwargs) in enumerate(halves):
        sub = run.path / name
        so_far = f" ({time.perf_counter() - t0:.0f} s so far)" if i else ""
        if (sub / "results.json").is_file():
            print(f"== demo {i + 1}/2: {name}: finished before, kept ==", flush=True)
            continue
        again = (sub / "config.toml").is_file()
        print(f"== demo {i + 1}/2: {name}{' (resumed)' if again else ''}{so_far} ==", flush=True)
        runner(cfg, str(sub), resume=again, **kwargs)
    run.write_json("timing.json", {"seconds": round(before + time.perf_counter() - t0, 1)})
    path = build_report(run.path)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; report: {path}", flush=True)
    return run.path
