"""Reports are built from run directories only (never from live objects)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fedmllm.errors import UserError


def run_kind(run_dir: Path) -> str:
    meta = run_dir / "meta.json"
    if not meta.is_file():
        raise UserError(f"{run_dir} is not a fedmllm run directory (no meta.json)")
    from fedmllm.runs import read_json

    data = read_json(meta)
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise UserError(f"{meta} names no run kind (no \"kind\" key): not a fedmllm run directory, or damaged")
    return data["kind"]


def build_report(run_dir: Path) -> Path:
    """(Re)build ``report.md`` and ``plots/`` of one run directory."""
    kind = run_kind(run_dir)
    if kind == "centralized":
        from fedmllm.report.centralized import build_centralized_report

        return build_centralized_report(run_dir)
    if kind == "federated":
        from fedmllm.report.federated import build_federated_report

        return build_federated_report(run_dir)
    if kind == "demo":
        from fedmllm.report.demo import build_demo_report

        return build_demo_report(run_dir)
    if kind == "collab":
        from fedmllm.report.collab import write_report

        return write_report(run_dir)
    if kind == "seeds":
        from fedmllm.report.seeds import build_seeds_report

        return build_seeds_report(run_dir)
    raise UserError(f"{run_dir}: no report for runs of kind {kind!r}")


def build_reports(run_dirs: list[Path], out: Optional[str] = None) -> list[Path]:
    """Rebuild each run's report; with several runs also a side-by-side comparison."""
    for d in run_dirs:
        if not d.is_dir():
            raise UserError(f"run directory not found: {d}")
    paths = [build_report(d) for d in run_dirs]
    if len(run_dirs) > 1:
        from fedmllm.report.compare import build_comparison

        paths.append(build_comparison(run_dirs, Path(out) if out else run_dirs[0] / "compare"))
    return paths
