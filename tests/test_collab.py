"""``fedmllm collab`` end to end on a random-init large model (tiny config, in-process backend).

1. Bad input: one line on stderr, exit code 2, no run directory, nothing trained (validation only).
2. What a client uploads: `ClientRuntime.run_round` of the ``repr_align`` and ``fedmkt`` client
   halves, with the paradigm's own payload and the server's real `Sides`: the reply holds the
   trained LoRA state and the public-set outputs `Paradigm.expected` names, nothing else (no
   images or token ids go up).
3. One full run (every baseline and paradigm, ~40 s): results.json, metrics.jsonl, and a resume
   that reruns one deleted paradigm to the identical result while skipping the finished ones.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from simulations.cli import main

ROUNDS = 2
# /tmp/collab_tiny.toml; ``@LARGE`` is the module's random-init large checkpoint.
CONFIG = """\
seed = 0
[model]
name = "tiny-vila"
[data]
train_n = 32
test_n = 4
upstream_n = 4
[train]
lr = 2e-3
batch_size = 8
[methods.lora]
r = 4
alpha = 8
[federated]
num_clients = 2
rounds = 2
local_steps = 2
method = "lora"
strategies = ["fedavg"]
baselines = []
backend = "inprocess"
upstream_n = 4
[collab]
large = "@LARGE"
public_n = 2
kd_steps = 2
kd_batch_size = 4
large_steps = 4
"""
BASELINES = ["large_zero", "large_pooled", "small_fedavg"]  # the run order: baselines first
PARADIGMS_RUN = ["fedcollm", "fedmkt", "offsite", "proxy", "repr_align"]  # collab.paradigms' default
WITH_SMALL = {"small_fedavg", "fedcollm", "fedmkt", "repr_align"}
WITH_ROUNDS = ["small_fedavg", "fedcollm", "fedmkt", "offsite", "repr_align"]
TIMING = {"seconds", "end_time", "wall_seconds", "seconds_eval", "client_seconds_mean", "client_seconds_max",
          "client_peak_rss_mb"}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """The tiny collab config, its large model a random-init ``tiny-llava-ov-large`` saved here."""
    from fedmllm.models import build_model, save_bundle

    root = tmp_path_factory.mktemp("collab")
    large = save_bundle(build_model("tiny-llava-ov-large", pretrained=False), root / "large")
    path = root / "collab.toml"
    path.write_text(CONFIG.replace("@LARGE", str(large)))
    return path


@pytest.fixture(scope="module")
def finished_run(config_file, tmp_path_factory) -> Path:
    """One complete run of every baseline and paradigm."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["collab", "--config", str(config_file), "--out", str(out)]) == 0
    return out


def _snapshot(root: Path) -> dict:
    return {str(p): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _strip(obj):
    """``obj`` without wall-clock and memory fields (they differ between any two runs)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


# --- 1. bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, keyword", [
    pytest.param(["collab.emulator_bottom=3", "collab.emulator_top=3"], "6 layers < bottom + top + 1 = 7",
                 id="offsite-large-too-shallow"),
    pytest.param(['collab.public_tasks=["synth-chd"]', "collab.public_offset=0"],
                 "overlaps the clients' data", id="public-overlaps-client-data"),
    pytest.param(["collab.large=/nonexistent/folder"], "collab.large: unknown model '/nonexistent/folder'",
                 id="large-missing"),
    pytest.param(["collab.large=@tmp/empty"], "has no config.json", id="large-folder-without-config"),
    pytest.param(['collab.paradigms=["no_such_paradigm"]'], "collab.paradigms: unknown name 'no_such_paradigm'; valid: fedcollm, fedmkt, offsite, proxy, repr_align",
                 id="paradigm-unknown"),
    pytest.param(['collab.paradigms=["small_fedavg"]'], "collab.paradigms: unknown name 'small_fedavg'", id="baseline-as-paradigm"),
    pytest.param(['collab.baselines=["large_zero"]'], "add small_fedavg to collab.baselines",
                 id="proxy-without-small-fedavg"),
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(config_file, tmp_path, capsys, monkeypatch,
                                                          overrides, keyword):
    import fedmllm.training.loop as loop

    def no_training(*args, **kwargs):
        raise AssertionError("a bad config reached training")

    monkeypatch.setattr(loop, "train_local", no_training)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(["collab", "--config", str(config_file), "--out", str(out),
                 *[o.replace("@tmp", str(tmp_path)) for o in overrides]])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("fedmllm collab: error: ") and keyword in lines[0], lines[0]
    assert not out.exists()
    assert _snapshot(tmp_path) == before, "the failed command created or changed files"


# --- 2. what a client uploads -------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(finished_run, config_file, tmp_path_factory):
    """The server's `CollabExperiment` (real `Sides`, real in-process `ClientRuntime`), reopened
    on a copy of the finished run so nothing is recomputed or changed."""
    from fedmllm.collab.experiment import CollabExperiment
    from fedmllm.config import config_from_toml
    from fedmllm.runs import RunDir

    copy = tmp_path_factory.mktemp("server") / "run"
    shutil.copytree(finished_run, copy)
    cfg = config_from_toml((copy / "config.toml").read_text())
    return CollabExperiment(cfg, RunDir.create(copy, cfg, "collab", resume=True))


def _client_round(exp, name: str):
    """(paradigm, round-1 global state, its payload to client 0, client 0's update)."""
    from fedmllm.collab.base import PARADIGMS
    from fedmllm.federated import protocol as P
    from fedmllm.federated.rounds import round_payloads

    fed = exp.cfg.federated
    algo = PARADIGMS.get(name)({}, num_clients=fed.num_clients)
    algo.bind(exp.sides)
    state = exp.server.initial_state()
    config = {P.SERVER_ROUND: 1, P.LR: exp.cfg.train.lr, P.LOCAL_STEPS: fed.local_steps, P.ALGORITHM: name,
              P.SYSTEM: name}
    payload = round_payloads(algo, 1, state, [0], config)[0]
    return algo, state, payload, exp.clients.run_round(0, payload, {})


def _pixel_bytes(samples) -> int:
    return sum(np.asarray(image).nbytes for s in samples for image in s.images)


@pytest.mark.parametrize("name, shapes", [
    ("repr_align", lambda p, c, d: {"visual": (p, d), "hidden": (p, d)}),
    ("fedmkt", lambda p, c, d: {"ids": (p, c.max_answer_tokens, c.top_k), "values": (p, c.max_answer_tokens, c.top_k),
                                "lengths": (p,), "ce": (p,)}),
])
def test_client_uploads_its_state_and_public_outputs_never_inputs(server, name, shapes):
    from fedmllm.collab.base import OUTPUTS
    from fedmllm.federated import protocol as P
    from fedmllm.federated.algorithms.base import GLOBAL, STATE

    algo, state, payload, update = _client_round(server, name)
    assert set(payload.arrays) == {GLOBAL}  # nothing but the small LoRA goes down
    public = server.sides.public
    p, d = len(public), server.sides.width("small")
    assert p == len(server.cfg.data.upstream) * server.cfg.collab.public_n
    assert d == server.bundle.model.config.text_config.hidden_size != server.sides.width("large")

    assert set(update.arrays) == {STATE, OUTPUTS}
    assert set(update.arrays[STATE]) == set(state)  # every LoRA key, as FedAvg shares them
    outputs = update.arrays[OUTPUTS]
    assert {k: v.shape for k, v in outputs.items()} == shapes(p, server.cfg.collab, d)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in outputs.values())
    # What the reply check of the round loop expects is exactly this, and it accepts it.
    assert {g: {k: v.shape for k, v in a.items()} for g, a in update.arrays.items()} == algo.expected(1, 0, state)
    P.validate_reply(0, update.arrays, {P.NUM_EXAMPLES: update.num_examples, P.TRAIN_LOSS: update.train_loss,
                                        P.PARTITION_ID: 0}, algo.expected(1, 0, state))
    # Outputs, not inputs: a fraction of the public images' raw pixels (uint8).
    assert sum(v.nbytes for v in outputs.values()) * 4 < _pixel_bytes(public)
    if name == "fedmkt":  # top-k ids are vocabulary ids of the small model's own predictions
        ids, lengths = outputs["ids"], outputs["lengths"]
        assert (ids == np.round(ids)).all() and ids.min() >= 0 and ids.max() < len(server.clients.processor.tokenizer)
        assert ((lengths >= 1) & (lengths <= server.cfg.collab.max_answer_tokens)).all()
        assert (outputs["ce"] > 0).all()


# --- 3. one full run ----------------------------------------------------------------------------
def test_results_list_every_system_in_order_with_the_sides_it_changes(finished_run):
    from fedmllm.collab.base import PARADIGMS
    from fedmllm.config import config_from_toml

    cfg = config_from_toml((finished_run / "config.toml").read_text())

    systems = json.loads((finished_run / "results.json").read_text())["systems"]
    assert [s["system"] for s in systems] == BASELINES + PARADIGMS_RUN
    for s in systems:
        name, cls = s["system"], PARADIGMS.get(s["system"])
        assert s["family"] == cls.family, name
        if cls.large_changes or name in ("large_zero", "proxy"):
            assert s["large"] is not None, name
            assert math.isfinite(s["large"]["E"]) and math.isfinite(s["large"]["F"]), name
        if name in WITH_SMALL:
            assert s["small"] is not None, name
            assert math.isfinite(s["small"]["E"]) and math.isfinite(s["small"]["F"]), name
        else:
            assert s["small"] is None, name
        if cls.large_changes and cls.rounds:
            assert (finished_run / "adapters" / name / "large").is_dir(), name
    by = {s["system"]: s for s in systems}
    assert by["offsite"]["large"] is not None and by["offsite"]["small"] is None
    # The output paradigms upload the small LoRA and their public-set outputs; downlink is the LoRA.
    fedavg = by["small_fedavg"]
    c = cfg.collab
    p, d = len(cfg.data.upstream) * c.public_n, 128  # tiny-vila's text hidden size
    for name, extra in (("repr_align", 2 * p * d * 4), ("fedmkt", (2 * p * c.max_answer_tokens * c.top_k + 2 * p) * 4)):
        assert by[name]["bytes_up_per_client_round"] - fedavg["bytes_up_per_client_round"] >= extra, name
        assert by[name]["bytes_down_per_client_round"] == fedavg["bytes_down_per_client_round"], name


def test_metrics_have_both_sides_per_round_and_the_clients_costs(finished_run):
    events = _events(finished_run)
    evals = [(e["system"], e["side"], e["round"]) for e in events if e["event"] == "global_eval"]
    rounds = list(range(1, ROUNDS + 1))
    assert [r for s, side, r in evals if (s, side) == ("fedcollm", "large")] == rounds
    assert [r for s, side, r in evals if (s, side) == ("fedcollm", "small")] == rounds
    assert not [e for e in evals if e[0] == "offsite" and e[1] == "small"]
    for name in WITH_ROUNDS:
        rows = [e for e in events if e["event"] == "round" and e["system"] == name]
        assert [e["round"] for e in rows] == rounds, name
        for e in rows:
            assert e["bytes_up"] > 0 and e["bytes_down"] > 0 and e["client_seconds_mean"] > 0, (name, e)
    assert [e["system"] for e in events if e["event"] == "system_done"] == BASELINES + PARADIGMS_RUN


def test_resume_reruns_a_deleted_paradigm_identically_and_skips_the_rest(finished_run, config_file, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for path in (run / "systems" / "repr_align.json", run / "progress" / "repr_align.json"):
        path.unlink()
    shutil.rmtree(run / "checkpoints" / "repr_align")
    assert main(["collab", "--resume", str(run)]) == 0  # no --config: the run's own config.toml

    def results(r):
        return _strip(json.loads((r / "results.json").read_text()))

    def events(r):  # node_partitions describes the process (asked again after a restart)
        return [_strip(e) for e in _events(r) if e["event"] != "node_partitions"]

    assert results(run) == results(finished_run)
    assert events(run) == events(finished_run)  # the finished paradigms did not run again
    for f in sorted((finished_run / "adapters" / "repr_align").rglob("*.safetensors")):
        assert (run / f.relative_to(finished_run)).read_bytes() == f.read_bytes(), f
