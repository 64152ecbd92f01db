"""Kill -9 a real federated run at many points, resume it each time, get the uninterrupted result.

The run is the real CLI (`fedmllm federated`) in a subprocess, on the in-process engine (the real
ServerApp and ClientApp exchanging real Flower messages; no Ray, so each process takes seconds).
``FEDMLLM_KILL_AT`` (fedmllm/faults.py) makes the process SIGKILL itself at a named point:
inside the pooled baseline's training (after a loop checkpoint), mid-round (after the clients
trained, before aggregation), right after aggregation, during evaluation, halfway through writing
a round checkpoint, between systems, and inside the local baseline. Each killed attempt is
resumed with ``--resume``; the final run must equal an uninterrupted one: every saved state bit
for bit, ``results.json`` and ``metrics.jsonl`` equal but for wall-clock fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=2", "federated.rounds=3",
        "federated.local_steps=2", "federated.upstream_n=2", "federated.upstream_every=2",
        "federated.save_every=2", "federated.backend=inprocess", "federated.baseline_checkpoint_every=1",
        'federated.strategies=["fedavg", "fedadam", "scaffold", "fedsa_lora"]', 'federated.baselines=["pooled", "local"]',
        "strategy_options.scaffold.control=option2"]
# In run order: pooled (3 rounds x 4 steps), fedavg, fedadam, scaffold, fedsa_lora (3 rounds each; SCAFFOLD's
# c_i and FedSA-LoRA's B live in the client store), local (2 clients x 3 rounds x 2 steps).
KILL_POINTS = ["pooled/3", "pooled/segment/2", "fedavg/2/train", "fedadam/2/aggregate", "fedadam/done",
               "scaffold/1/evaluate", "scaffold/3/checkpoint", "fedsa_lora/2/train",
               "fedsa_lora/3/evaluate", "local-1/1"]
TIMING = {"seconds", "end_time", "wall_seconds"}


def fedmllm(*args: str, kill_at: str | None = None, overrides=TINY) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FEDMLLM_KILL_AT", None)
    if kill_at:
        env["FEDMLLM_KILL_AT"] = kill_at
    exe = Path(sys.executable).with_name("fedmllm")
    return subprocess.run([str(exe), "federated", *args, *overrides], env=env, capture_output=True,
                          text=True, timeout=600)


def strip(obj, drop=TIMING):
    """``obj`` without wall-clock fields (they differ between any two runs), or the ``drop`` ones."""
    if isinstance(obj, dict):
        return {k: strip(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [strip(v, drop) for v in obj]
    return obj


def events(run: Path) -> list[dict]:
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # node_partitions describes the process (asked again after a restart), not the experiment
    return [strip(e) for e in out if e["event"] != "node_partitions"]


def state_files(run: Path) -> dict[str, bytes]:
    """Every saved state of the run: adapters, final round checkpoints, client stores."""
    files = {}
    for pattern in ("adapters/**/*.safetensors", "checkpoints/**/*.safetensors", "clients/**/*.safetensors"):
        for f in sorted(run.glob(pattern)):
            files[str(f.relative_to(run))] = f.read_bytes()
    return files


@pytest.mark.slow
def test_killed_everywhere_and_resumed_equals_uninterrupted(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = fedmllm("--out", str(ref))
    assert done.returncode == 0, done.stderr[-2000:]
    first = fedmllm("--out", str(run), kill_at=KILL_POINTS[0])
    assert first.returncode == -9, f"not killed at {KILL_POINTS[0]}: {first.stderr[-1500:]}"
    for point in KILL_POINTS[1:]:
        attempt = fedmllm("--resume", str(run), kill_at=point)
        assert attempt.returncode == -9, f"not killed at {point}: {attempt.stderr[-1500:]}"
        if point == "scaffold/3/checkpoint":  # torn: only a temporary folder beside round 2
            folder = run / "checkpoints" / "scaffold"
            assert sorted(p.name for p in folder.iterdir()) == [".round-0003.tmp", "round-0002"]
    final = fedmllm("--resume", str(run))
    assert final.returncode == 0, final.stderr[-2000:]

    assert strip(json.loads((run / "results.json").read_text())) == \
        strip(json.loads((ref / "results.json").read_text()))
    mine, theirs = events(run), events(ref)
    rounds = [(e["system"], e["round"]) for e in mine if e["event"] == "round"]
    assert rounds == [(s, r) for s in ("fedavg", "fedadam", "scaffold", "fedsa_lora") for r in (1, 2, 3)]
    assert [e["event"] for e in mine].count("personalized_eval") == 12  # each client's own model
    assert any(k.startswith("clients/fedsa_lora/") for k in state_files(run))  # every client's B
    assert mine == theirs
    a, b = state_files(run), state_files(ref)
    assert set(a) == set(b) and len(a) >= 9
    assert [k for k in a if a[k] != b[k]] == []  # bit for bit
    assert not list((run / "checkpoints").glob("*.pt"))  # baseline loop checkpoints cleaned up


@pytest.mark.slow
def test_baselines_on_the_clients_killed_and_resumed_equal_the_server_side_ones(tmp_path):
    """federated.baseline_placement = clients, killed after round 1's baseline jobs and again
    after round 2's: the resumed run continues from the segments saved (rounds 1 and 2 are not
    trained again) and ends where the server-side baselines of an uninterrupted run end, bit for
    bit."""
    tiny = [*TINY[:-3], 'federated.strategies=["fedavg"]', 'federated.baselines=["pooled", "local"]']
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = fedmllm("--out", str(ref), overrides=[*tiny, "federated.baseline_placement=server"])
    assert done.returncode == 0, done.stderr[-2000:]
    mine = [*tiny, "federated.baseline_placement=clients"]
    first = fedmllm("--out", str(run), kill_at="baselines/1", overrides=mine)
    assert first.returncode == -9, f"not killed at baselines/1: {first.stderr[-1500:]}"
    second = fedmllm("--resume", str(run), kill_at="baselines/2", overrides=mine)
    assert second.returncode == -9, f"not killed at baselines/2: {second.stderr[-1500:]}"
    assert "pooled, local-0, local-1: on the clients, 3 rounds" in second.stdout
    final = fedmllm("--resume", str(run), overrides=mine)
    assert final.returncode == 0, final.stderr[-2000:]

    results = [json.loads((r / "results.json").read_text()) for r in (run, ref)]
    assert strip(results[0], TIMING | {"trained_on"}) == strip(results[1], TIMING | {"trained_on"})
    assert [e for e in events(run) if e["event"] != "baseline_job_failed"] == events(ref)
    a, b = state_files(run), state_files(ref)
    assert set(a) == set(b) and [k for k in a if a[k] != b[k]] == []  # bit for bit
