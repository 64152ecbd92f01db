"""The centralized grid end to end on a fresh tiny model: files, E/F/O arithmetic, resume, report."""

import json

import pytest

from simulations.cli import main
from fedmllm.config import load_config
from fedmllm.errors import UserError
from simulations.centralized import run_centralized

OVERRIDES = ["model.pretrained=false", "centralized.models=tiny-vila", "centralized.methods=lora,last_layer",
             "data.downstream=synth-chd", "data.upstream=synth-okvqa,synth-mme", "data.train_n=16",
             "data.test_n=4", "data.upstream_n=4", "train.steps=3", "train.batch_size=4"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("central") / "run"
    run_centralized(load_config(None, OVERRIDES), str(out))
    return out


def test_run_directory_contents(grid):
    for name in ("config.toml", "meta.json", "metrics.jsonl", "results.json", "results.csv", "report.md",
                 "plots/tradeoff.png", "zeroshot/tiny-vila.json"):
        assert (grid / name).is_file(), name
    assert (grid / "adapters/tiny-vila/lora/synth-chd/adapter_config.json").is_file()
    assert (grid / "adapters/tiny-vila/lora/synth-chd/adapter_model.safetensors").is_file()
    cells = json.loads((grid / "results.json").read_text())["cells"]
    assert {(c["method"], c["task"]) for c in cells} == {("lora", "synth-chd"), ("last_layer", "synth-chd")}
    meta = json.loads((grid / "meta.json").read_text())
    assert meta["kind"] == "centralized" and "torch" in meta["versions"]


def test_efo_arithmetic(grid):
    zero = json.loads((grid / "zeroshot/tiny-vila.json").read_text())["scores"]
    for c in json.loads((grid / "results.json").read_text())["cells"]:
        assert c["E"] == pytest.approx(c["tuned_score"] - zero["synth-chd"])
        deltas = [c["upstream_tuned"][u] - zero[u] for u in ("synth-okvqa", "synth-mme")]
        assert c["F"] == pytest.approx(sum(deltas) / 2)
        assert c["O"] == pytest.approx(c["E"] + c["F"])
        # Both upstream metrics (vqa_accuracy, mme) are accuracies: F_acc = F here.
        assert c["F_acc"] == pytest.approx(c["F"]) and c["F_acc_excluded"] == []
        kept = [u for u in ("synth-okvqa", "synth-mme") if zero[u] != 0]
        assert c["F_rel_excluded"] == [u for u in ("synth-okvqa", "synth-mme") if u not in kept]
        if kept:
            assert c["F_rel"] == pytest.approx(sum(100 * (c["upstream_tuned"][u] - zero[u]) / zero[u]
                                                   for u in kept) / len(kept))
        assert c["train"]["steps"] == 3


def test_report_rebuilt_from_files_alone(grid, capsys):
    before = (grid / "report.md").read_text()
    (grid / "report.md").unlink()
    (grid / "plots" / "tradeoff.png").unlink()
    assert main(["report", str(grid)]) == 0
    assert (grid / "report.md").read_text() == before
    assert (grid / "plots" / "tradeoff.png").is_file()
    assert "| selective | last_layer |" in before and "| reparameterization | lora |" in before
    assert "by specialization (mean E)" in before
    # the floors the run stored (floors.json, before any training) are in the table
    floors = json.loads((grid / "floors.json").read_text())
    assert set(floors) == {"synth-chd", "synth-okvqa", "synth-mme"} and floors["synth-chd"]["majority_from"] == "train"
    assert "| *floors* | *chance / majority* | " + f"{floors['synth-chd']['chance']:.1f} / " in before


def test_resume_skips_finished_cells(grid):
    cells = sorted((grid / "cells").glob("*.json"))
    keep, redo = cells[0], cells[1]
    keep_text = keep.read_text()
    redo.unlink()
    run_centralized(load_config(None, OVERRIDES), str(grid), resume=True)
    assert keep.read_text() == keep_text  # not recomputed
    assert redo.is_file()
    assert len(json.loads((grid / "results.json").read_text())["cells"]) == 2


def test_resume_with_different_config_refused(grid):
    snapshot = {p: p.read_bytes() for p in grid.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="config differs in train.steps"):
        run_centralized(load_config(None, OVERRIDES + ["train.steps=4"]), str(grid), resume=True)
    assert {p: p.read_bytes() for p in grid.rglob("*") if p.is_file()} == snapshot


def test_existing_directory_not_overwritten(grid):
    with pytest.raises(UserError, match="already exists"):
        run_centralized(load_config(None, OVERRIDES), str(grid))


def test_method_needing_a_missing_module_group(monkeypatch, tmp_path):
    """A model type without a projector group (a row with projector=None) cannot run 'projector'."""
    import dataclasses

    from fedmllm.models import groups

    monkeypatch.setitem(groups.GROUPS, "llava", dataclasses.replace(groups.GROUPS["llava"], projector=None))
    out = tmp_path / "run"
    cfg = load_config(None, OVERRIDES + ["centralized.methods=projector"])
    with pytest.raises(UserError, match="has no 'projector' module group"):
        run_centralized(cfg, str(out))
    assert not out.exists()
