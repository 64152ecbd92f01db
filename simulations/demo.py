"""``fedmllm demo`` (what ``make demo`` runs): the embedded centralized benchmark and a federated
comparison with its pooled and local baselines, in one run directory with one report."""

from __future__ import annotations

import time
from pathlib import Path

from fedmllm.config import Config
from fedmllm.runs import RunDir, check_run_dir


def run_demo(cfg: Config, out: str) -> Path:
    from fedmllm.report import build_report
    from simulations.centralized import check_centralized, run_centralized
    from simulations.federated import check_federated, run_federated

    check_run_dir(out)
    check_federated(cfg)  # both halves are validated before any compute
    check_centralized(cfg)
    run = RunDir.create(out, cfg, "demo")
    t0 = time.perf_counter()
    print("== demo 1/2: centralized benchmark ==", flush=True)
    run_centralized(cfg, str(run.path / "centralized"))
    print(f"== demo 2/2: federated comparison ({time.perf_counter() - t0:.0f} s so far) ==", flush=True)
    run_federated(cfg, str(run.path / "federated"), checked=True)
    run.write_json("timing.json", {"seconds": round(time.perf_counter() - t0, 1)})
    path = build_report(run.path)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; report: {path}", flush=True)
    return run.path
