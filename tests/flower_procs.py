"""Test helpers for Flower's own processes: each test gives them a private root folder (FLWR_HOME, or
TMPDIR under which `fedmllm deploy` makes its FLWR_HOMEs), finds them by it, and stops them by PID."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def marked(root: Path) -> list[psutil.Process]:
    """Live processes whose FLWR_HOME lies under ``root`` (every Flower process a test started,
    and what they started: Ray workers inherit it too)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            home = p.environ().get("FLWR_HOME", "")
        except psutil.Error:
            continue
        if home and Path(home).is_relative_to(root):
            found.append(p)
    return found


def stop(procs: list[psutil.Process], grace_s: float = 10.0) -> None:
    """SIGTERM each by PID, SIGKILL what is left after ``grace_s`` (the deployment's own rule)."""
    from simulations.deploy import terminate

    terminate([p.pid for p in procs], grace_s)


@contextmanager
def flower_root() -> Iterator[Path]:
    """A short private folder (Ray's socket paths must stay short); on exit every process marked with
    it is stopped by PID and the folder removed."""
    root = Path(tempfile.mkdtemp(prefix="fl", dir="/tmp")).resolve()
    try:
        yield root
    finally:
        stop(marked(root))
        shutil.rmtree(root, ignore_errors=True)


def base_env(**extra: str) -> dict:
    """The environment of a Flower command in a test: quiet, offline, one torch thread, this venv first."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}


def copy_project(dest: Path) -> Path:
    """The project's files as a fresh clone would have them (tracked and not-ignored), copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except bytecode caches: `git status` for a copied tree."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
