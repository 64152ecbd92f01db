"""Run directories: created before any compute, never half-overwritten, resumable.

A run directory holds ``config.toml`` (the resolved config), ``meta.json`` (seed, versions, git
SHA, command), ``metrics.jsonl`` (one JSON object per event), ``results.json``, ``report.md`` and
``plots/``. Files are written atomically (temp file + rename). A directory that already holds a
run is only reused with ``resume=True`` and an identical config.

Every event also goes to the run's live trackers (config key ``tracking``, `fedmllm.tracking`):
TensorBoard event files in ``tb/``, optionally an MLflow file store in ``mlruns/``. They are opened
at the first event, flushed after each, and closed by `RunDir.close` (or ``with run:``); a
`RunDir` that is collected or a process that exits closes what is still open.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fedmllm.config import Config, diff, dumps, load_config
from fedmllm.errors import UserError


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n")


def _git_sha() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> dict[str, Any]:
    """What the run ran on: CPU model, cores, memory, GPUs and this process's torch threads."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        out["memory_gb"] = round(pages * size / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - hardware facts are best effort, never a reason to fail
        pass
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("fedmllm", "torch", "transformers", "peft", "flwr", "datasets", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


@dataclass
class RunDir:
    """A run directory on disk."""

    path: Path
    config: Config
    resumed: bool = False
    _tracking: Any = field(default=None, init=False, repr=False, compare=False)
    _closer: Any = field(default=None, init=False, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def create(cls, out: str | Path, cfg: Config, kind: str, resume: bool = False) -> "RunDir":
        """Create ``out`` for a new run, or reopen it for ``resume`` (config must match)."""
        from fedmllm.tracking import check_available

        path = check_run_dir(out, resume, cfg, kind)
        cfg_file = path / "config.toml"
        check_available(cfg.tracking)  # a missing tracker package fails before anything is created
        if resume:
            return cls(path, cfg, resumed=True)
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            atomic_write(cfg_file, dumps(cfg))
            write_json(path / "meta.json", {
                "kind": kind, "seed": cfg.seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": " ".join(sys.argv), "git_sha": _git_sha(), "versions": _versions(),
                "hardware": hardware(),
            })
        except OSError as e:
            if created:
                shutil.rmtree(path, ignore_errors=True)
            raise UserError(f"cannot write run directory {path}: {e.strerror or e}") from None
        return cls(path, cfg)

    def log(self, event: dict) -> None:
        """Append one event to ``metrics.jsonl`` (one JSON object per line, flushed), then hand it
        to the live trackers (opened at the first event; each flushed after it)."""
        with self._lock:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(event, default=float) + "\n")
                f.flush()
            if self.config.tracking:
                if self._tracking is None:
                    from fedmllm.tracking import Tracking

                    self._tracking = Tracking(self.path, self.config)
                    # closes it if this RunDir is collected or the process exits unclosed
                    self._closer = weakref.finalize(self, self._tracking.close, None)
                self._tracking.log(event)

    def close(self, failed: bool = False) -> None:
        """Close the live trackers (MLflow: the run ends FINISHED, or FAILED); idempotent. A later
        event opens them again (TensorBoard: a new event file in the same ``tb/``)."""
        with self._lock:
            tracking, self._tracking = self._tracking, None
            if self._closer is not None:
                self._closer.detach()
                self._closer = None
        if tracking is not None:
            tracking.close("FAILED" if failed else "FINISHED")

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    def __getstate__(self) -> dict:
        return {"path": self.path, "config": self.config, "resumed": self.resumed}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["config"], state["resumed"])

    def events(self) -> Iterator[dict]:
        return read_events(self.path)

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)


def check_run_dir(out: str | Path, resume: bool = False, cfg: Config | None = None,
                  kind: str | None = None) -> Path:
    """``out`` as a `Path` if it can become a new run directory (absent or empty, inside a
    writable folder) or, with ``resume``, holds a run (of ``kind``, with config ``cfg`` where
    given); else a `UserError`. Creates nothing."""
    path = Path(out)
    if resume:
        if not (path / "config.toml").is_file():
            raise UserError(f"cannot resume {path}: no config.toml there (not a fedmllm run directory)")
        if cfg is not None:
            changed = diff(load_config(path / "config.toml"), cfg)
            if changed:
                raise UserError(f"cannot resume {path}: its config differs in {', '.join(changed)}; "
                                "use the same config or a new --out")
        meta = read_json(path / "meta.json") if (path / "meta.json").is_file() else {}
        if kind is not None and isinstance(meta, dict) and meta.get("kind", kind) != kind:
            raise UserError(f"cannot resume {path}: it is a {meta.get('kind')!r} run, not {kind!r}")
        return path
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a directory; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        raise UserError(f"run directory {path} already exists and is not empty; "
                        f"pass --resume {path} to continue it or choose another --out")
    check_writable(path)
    return path


def check_writable(path: str | Path) -> None:
    """A `UserError` unless files can be written in the folder ``path`` (which may not exist
    yet: its nearest existing ancestor must be a writable folder). Leaves nothing behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a directory; choose another --out")
    parent = path.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {path}: {parent} is a file, not a folder; choose another --out")
    try:  # os.access says yes to root on a read-only mount: try it
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".fedmllm-write-test-"))
    except OSError as e:
        raise UserError(f"--out {path}: cannot create a folder in {parent} ({e.strerror or e}); "
                        "choose another --out") from None


def read_json(path: str | Path) -> Any:
    """The JSON object in ``path``; a missing, unreadable or corrupt file is a `UserError` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing") from None
    except (OSError, ValueError) as e:  # ValueError: bad JSON or not UTF-8
        raise UserError(f"{path} is unreadable or corrupt ({type(e).__name__}: {e})") from None


def read_events(path: str | Path) -> Iterator[dict]:
    """The events of a run directory's ``metrics.jsonl`` (a torn last line is skipped)."""
    f = Path(path) / "metrics.jsonl"
    if not f.is_file():
        return iter(())
    events = []
    for line in f.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves at most one torn line
    return iter(events)
