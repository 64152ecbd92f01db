"""The demo's report: the centralized and federated reports of its two sub-runs, in one page."""

from __future__ import annotations

import re
from pathlib import Path

from fedmllm.runs import atomic_write, read_json


def _embed(sub: Path, name: str) -> str:
    """A sub-run's report with its headings demoted and image paths made relative to the demo."""
    text = (sub / "report.md").read_text() if (sub / "report.md").is_file() else f"({name}: no report yet)\n"
    text = re.sub(r"^(#+)", r"#\1", text, flags=re.M)
    return re.sub(r"\]\(plots/", f"]({name}/plots/", text)


def build_demo_report(run_dir: Path) -> Path:
    from fedmllm.report import build_report

    parts = [f"# fedmllm demo — `{run_dir.name}`\n"]
    timing = run_dir / "timing.json"
    if timing.is_file():
        parts.append(f"Total wall time: {read_json(timing)['seconds']} s.\n")
    for name in ("centralized", "federated"):
        sub = run_dir / name
        if (sub / "meta.json").is_file():
            build_report(sub)
        parts.append(_embed(sub, name))
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(parts))
    return path
