"""Per-round checkpoints of a federated system and the progress journal of an experiment.

A round checkpoint (``<run>/checkpoints/<system>/round-NNNN/``) holds everything the next round
needs: the global state, the algorithm's server state (moments, controls), the RNG states
(python, numpy, torch), the round number, running totals (bytes, seconds) and the size of
``metrics.jsonl`` after the round's events. It is written into a temporary folder and renamed
into place, so a folder named ``round-NNNN`` is always complete; older rounds are then removed.
The clients' local state lives beside it in `fedmllm.federated.client.ClientStore`.

`Progress` records the experiment's finished steps (setup, each system) with the size of
``metrics.jsonl`` at that point; a resumed run truncates ``metrics.jsonl`` to the furthest
durable point, so a killed attempt's events never appear twice.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fedmllm.faults import crash_point
from fedmllm.federated.aggregate import contiguous
from fedmllm.runs import write_json


def _flatten(groups: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{g}/{k}": contiguous(v) for g, arrays in groups.items() for k, v in arrays.items()}


def _unflatten(flat: dict[str, np.ndarray], order: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of `_flatten`, in the saved key ``order`` (safetensors sorts keys; sums over a
    state must run in the same order after a resume to give the same bits)."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name in order:
        group, key = name.split("/", 1)
        groups.setdefault(group, {})[key] = flat[name]
    return groups


def rng_states() -> dict[str, Any]:
    """The process's python, numpy and torch (CPU) RNG states."""
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` returned."""
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


@dataclass
class RoundCheckpoint:
    """What a system's loop needs to continue after ``round``."""

    round: int
    global_state: dict[str, np.ndarray]
    algorithm: dict[str, Any]  # Algorithm.state_dict(): {"arrays": Groups, "values": dict}
    totals: dict[str, float] = field(default_factory=dict)
    metrics_offset: int = 0
    rng: Optional[dict[str, Any]] = None


class CheckpointStore:
    """Round checkpoints of every system of one run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _rounds(self, system: str) -> list[int]:
        folder = self.root / system
        if not folder.is_dir():
            return []
        return sorted(int(p.name.split("-")[1]) for p in folder.iterdir()
                      if p.is_dir() and p.name.startswith("round-"))

    def save(self, system: str, ckpt: RoundCheckpoint) -> Path:
        """Write ``ckpt`` atomically (temp folder + rename), then drop older rounds."""
        from safetensors.numpy import save_file

        folder = self.root / system
        final = folder / f"round-{ckpt.round:04d}"
        tmp = folder / f".round-{ckpt.round:04d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        glob = _flatten({"global": ckpt.global_state})
        save_file(glob, str(tmp / "global.safetensors"))
        crash_point(system, ckpt.round, "checkpoint")  # a torn checkpoint: only the temp folder
        algo = _flatten(ckpt.algorithm.get("arrays", {}))
        save_file(algo, str(tmp / "algorithm.safetensors"))
        with open(tmp / "rng.pkl", "wb") as f:
            pickle.dump(ckpt.rng or rng_states(), f)
        write_json(tmp / "state.json", {"round": ckpt.round, "totals": ckpt.totals,
                                        "metrics_offset": ckpt.metrics_offset,
                                        "algorithm_values": ckpt.algorithm.get("values", {}),
                                        "algorithm_groups": list(ckpt.algorithm.get("arrays", {})),
                                        "order": {"global": list(glob), "algorithm": list(algo)}})
        if final.exists():  # a redone round whose rename completed but whose pruning did not
            shutil.rmtree(final)
        os.replace(tmp, final)
        for r in self._rounds(system):
            if r < ckpt.round:
                shutil.rmtree(folder / f"round-{r:04d}", ignore_errors=True)
        return final

    def latest(self, system: str) -> Optional[RoundCheckpoint]:
        """The newest complete checkpoint of ``system``, or None."""
        from safetensors.numpy import load_file

        rounds = self._rounds(system)
        if not rounds:
            return None
        folder = self.root / system / f"round-{rounds[-1]:04d}"
        meta = json.loads((folder / "state.json").read_text())
        with open(folder / "rng.pkl", "rb") as f:
            rng = pickle.load(f)  # noqa: S301 - our own file, written by `save`
        arrays = _unflatten(load_file(str(folder / "algorithm.safetensors")), meta["order"]["algorithm"])
        algo = {"arrays": {g: arrays.get(g, {}) for g in meta["algorithm_groups"]},
                "values": meta["algorithm_values"]}
        glob = _unflatten(load_file(str(folder / "global.safetensors")), meta["order"]["global"])["global"]
        return RoundCheckpoint(meta["round"], glob, algo, meta["totals"], meta["metrics_offset"], rng)


class Progress:
    """Finished steps of an experiment (``<run>/progress/<step>.json``), each with the size of
    ``metrics.jsonl`` when it finished."""

    def __init__(self, run_path: str | Path):
        self.run_path = Path(run_path)
        self.root = self.run_path / "progress"

    def metrics_size(self) -> int:
        f = self.run_path / "metrics.jsonl"
        return f.stat().st_size if f.is_file() else 0

    def mark(self, step: str, **info: Any) -> None:
        """Record ``step`` as finished, now (after its events were logged)."""
        write_json(self.root / f"{step}.json", {"metrics_offset": self.metrics_size(), **info})

    def get(self, step: str) -> Optional[dict]:
        path = self.root / f"{step}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def truncate_metrics(self, offset: int) -> None:
        """Cut ``metrics.jsonl`` back to ``offset`` bytes (a killed attempt's tail)."""
        f = self.run_path / "metrics.jsonl"
        if f.is_file() and f.stat().st_size > offset:
            with open(f, "r+b") as fh:
                fh.truncate(offset)
                fh.flush()
                os.fsync(fh.fileno())
