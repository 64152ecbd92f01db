"""Live tracking (`fedmllm.tracking`): TensorBoard event files (and an MLflow file store) written
as a run goes, read back and checked against the run's own ``metrics.jsonl``.

One tiny federated run in process (shipped tiny-vila weights, so the scores are not all zero)
feeds most tests; the rest replay its events through `RunDir` (the only hook) or map single events.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest

from fedmllm.config import load_config
from fedmllm.errors import UserError
from fedmllm.runs import RunDir, read_events
from fedmllm.tracking import EventScalars, TrackerSpec

HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None
TINY = ["model.name=tiny-vila", "model.pretrained=true", "data.train_n=8", "data.test_n=4", "data.upstream_n=4",
        "train.batch_size=4", "federated.num_clients=2", "federated.rounds=2", "federated.local_steps=2",
        "federated.upstream_n=2", "federated.upstream_every=1", "federated.baselines=[]",
        'federated.strategies=["fedavg"]', "federated.backend=inprocess"]
TRACKING = '["tensorboard", "mlflow"]' if HAVE_MLFLOW else '["tensorboard"]'


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of ``run/tb`` -> [(step, value), ...] in write order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def writer_threads() -> list[threading.Thread]:
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    return [t for t in threading.enumerate() if isinstance(t, _AsyncWriterThread) and t.is_alive()]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from simulations.federated import run_federated

    before = len(writer_threads())
    cfg = load_config(None, [*TINY, f"tracking={TRACKING}"])
    path = run_federated(cfg, str(tmp_path_factory.mktemp("trk") / "run"))
    assert len(writer_threads()) == before  # the writer was closed at the end of the run
    return path


def test_tensorboard_scalars_equal_metrics_jsonl_round_by_round(run):
    tb, events = scalars(run), list(read_events(run))
    evals = [e for e in events if e["event"] == "global_eval"]
    assert [e["round"] for e in evals] == [1, 2]
    assert any(0 < v < 100 for e in evals for v in e["downstream"].values())  # real, varying scores
    for task in evals[0]["downstream"]:
        assert tb[f"fedavg/downstream/{task}"] == [(e["round"], pytest.approx(e["downstream"][task])) for e in evals]
    means = [(e["round"], pytest.approx(sum(e["downstream"].values()) / len(e["downstream"]))) for e in evals]
    assert tb["fedavg/downstream_mean"] == means
    assert tb["fedavg/F"] == [(e["round"], pytest.approx(e["F"])) for e in evals]
    for task in evals[0]["upstream"]:
        assert tb[f"fedavg/upstream/{task}"] == [(e["round"], pytest.approx(e["upstream"][task])) for e in evals]

    rounds = [e for e in events if e["event"] == "round"]
    assert tb["fedavg/bytes_up"] == [(e["round"], pytest.approx(e["bytes_up"])) for e in rounds]
    assert tb["fedavg/bytes_down"] == [(e["round"], pytest.approx(e["bytes_down"])) for e in rounds]
    assert tb["fedavg/lora_aggregation_error_rel"] == \
        [(e["round"], pytest.approx(e["lora_aggregation_error_rel"])) for e in rounds]
    drift = {k for k, v in rounds[0]["drift"].items() if isinstance(v, (int, float))}
    assert {"all.cosine_pairwise_mean", "all.b_local", "lora_B.update_norm_mean"} <= drift
    for k in drift:  # every numeric drift measure, every round; lists and matrices skipped
        assert tb[f"fedavg/drift/{k}"] == [(e["round"], pytest.approx(e["drift"][k])) for e in rounds]
    lists = {k for k, v in rounds[0]["drift"].items() if isinstance(v, list)}
    assert {"weights", "all.update_norm", "all.cosine_matrix"} <= lists
    assert not any(f"fedavg/drift/{k}" in tb for k in lists)

    train = [e for e in events if e["event"] == "client_train"]
    for client in (0, 1):
        assert tb[f"fedavg/client_{client}/train_loss"] == \
            [(e["round"], pytest.approx(e["train_loss"])) for e in train if e["client"] == client]
    for r in (1, 2):
        losses = [e["train_loss"] for e in train if e["round"] == r]
        assert tb["fedavg/train_loss"][r - 1] == (r, pytest.approx(sum(losses) / len(losses)))

    done = next(e for e in events if e["event"] == "system_done")
    assert {k: tb[f"fedavg/final/{k}"] for k in "EFO"} == {k: [(0, pytest.approx(done[k]))] for k in "EFO"}
    zero = next(e for e in events if e["event"] == "zeroshot")
    assert tb["zeroshot/downstream/synth-chd"] == [(0, pytest.approx(zero["downstream"]["synth-chd"]))]
    assert any(t.startswith("fedavg/personalized/") for t in tb)


@pytest.mark.skipif(not HAVE_MLFLOW, reason="mlflow is not installed (pip install -e '.[mlflow]')")
def test_mlflow_file_store_holds_the_same_metrics(run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("fedmllm")
    (mrun,) = client.search_runs([exp.experiment_id])
    assert mrun.info.status == "FINISHED" and mrun.info.run_name == run.name
    assert mrun.data.params["federated.rounds"] == "2"
    assert mrun.data.params["tracking"] == str(["tensorboard", "mlflow"])
    tb = scalars(run)
    assert set(mrun.data.metrics) == set(tb)
    for tag in ("fedavg/downstream_mean", "fedavg/F", "fedavg/drift/all.b_local", "fedavg/train_loss",
                "fedavg/bytes_up", "fedavg/downstream/synth-flickr30k"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, tag))
        assert history == [(s, pytest.approx(v)) for s, v in tb[tag]]


def test_tracking_off_writes_no_tb(run, tmp_path):
    cfg = load_config(None, [*TINY, "tracking=[]"])
    with RunDir.create(tmp_path / "off", cfg, "federated") as off:
        for event in read_events(run):
            off.log(event)
    assert (tmp_path / "off" / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    assert not (tmp_path / "off" / "tb").exists() and not (tmp_path / "off" / "mlruns").exists()


def test_resumed_run_appends_to_the_same_tb_folder(run, tmp_path):
    cfg = load_config(None, [*TINY, "tracking=tensorboard"])
    events = list(read_events(run))
    half = next(i for i, e in enumerate(events) if e["event"] == "round") + 1  # killed after round 1
    with RunDir.create(tmp_path / "r", cfg, "federated") as first:
        for event in events[:half]:
            first.log(event)
    with RunDir.create(tmp_path / "r", cfg, "federated", resume=True) as again:
        for event in events[half:]:
            again.log(event)
    assert len(list((tmp_path / "r" / "tb").glob("events.out.tfevents.*"))) == 2
    # both attempts' steps are there (the two files are read in name order, which a clock tie can swap)
    assert sorted(s for s, _ in scalars(tmp_path / "r")["fedavg/bytes_up"]) == [1, 2]


def test_unknown_tracker_is_a_one_line_user_error():
    with pytest.raises(UserError) as err:
        load_config(None, ['tracking=["tensorboard", "tensorbord"]'])
    msg = str(err.value)
    assert "config key 'tracking': unknown tracker 'tensorbord'" in msg
    assert "Valid choices: mlflow, tensorboard" in msg and "\n" not in msg
    with pytest.raises(UserError, match="tracking lists tensorboard more than once"):
        load_config(None, ['tracking=["tensorboard", "tensorboard"]'])
    assert load_config(None, ["tracking=tensorboard,mlflow"]).tracking == ["tensorboard", "mlflow"]
    assert load_config(None, []).tracking == ["tensorboard"] and load_config(None, ["tracking=[]"]).tracking == []


def test_mlflow_not_installed_fails_before_the_run_dir_exists(monkeypatch, tmp_path):
    from simulations.federated import run_federated

    real = TrackerSpec.available
    monkeypatch.setattr(TrackerSpec, "available", lambda self: self.name != "mlflow" and real(self))
    cfg = load_config(None, [*TINY, 'tracking=["tensorboard", "mlflow"]'])
    with pytest.raises(UserError) as err:
        run_federated(cfg, str(tmp_path / "run"), checked=True)
    assert "needs the 'mlflow' package" in str(err.value) and "pip install -e '.[mlflow]'" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_event_mapping_centralized_cells_and_the_epsilon_hook():
    m = EventScalars()
    cell = {"event": "cell", "model": "org/tiny", "method": "lora", "task": "synth-chd", "tuned_score": 60.4,
            "E": 33.3, "F": -26.8, "O": 6.5, "F_rel": None}
    assert {(s.tag, s.value, s.step) for s in m(cell)} == {
        ("org__tiny/lora/synth-chd/tuned_score", 60.4, 0), ("org__tiny/lora/synth-chd/E", 33.3, 0),
        ("org__tiny/lora/synth-chd/F", -26.8, 0), ("org__tiny/lora/synth-chd/O", 6.5, 0)}
    zero = {"event": "zeroshot", "model": "tiny-vila", "scores": {"synth-chd": 27.0}}
    assert [(s.tag, s.value) for s in m(zero)] == [("tiny-vila/zeroshot/synth-chd", 27.0)]
    # differential privacy is not implemented: any numeric `epsilon` of any event is logged
    dp = [{"event": "round", "system": "fedavg", "round": 3, "epsilon": 1.5, "dp": {"epsilon": 2.0, "delta": 1e-5}},
          {"event": "client_train", "system": "fedavg", "round": 3, "client": 1, "train_loss": 1.0, "epsilon": 0.7},
          {"event": "partition", "counts": [], "epsilon": 4.0},
          {"event": "system_done", "system": "fedavg", "E": 1.0, "F": 0.0, "O": 1.0, "epsilon": 8.0}]
    tags = {s.tag: (s.value, s.step) for e in dp for s in m(e)}
    assert tags["fedavg/epsilon"] == (1.5, 3) and tags["fedavg/dp/epsilon"] == (2.0, 3)
    assert tags["fedavg/client_1/epsilon"] == (0.7, 3) and tags["partition/epsilon"] == (4.0, 0)
    assert tags["fedavg/final/epsilon"] == (8.0, 0)
    assert not any(isinstance(v, bool) for v, _ in tags.values())
