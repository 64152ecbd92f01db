"""``fedmllm eval --adapter DIR``: a run's tuned adapter scored again on the same samples gives the
run's own scores; per-sample predictions beside the scores; bad input is one line, exit 2."""

from __future__ import annotations

import json
import shutil

import pytest

from simulations.cli import main

# The shipped tiny-vila tuned hard enough on synth-scienceqa that its answers change (base 0.0 -> 50.0:
# it learns to answer with an option letter).
GRID = ["centralized.models=tiny-vila", "centralized.methods=lora,last_layer", "data.downstream=synth-scienceqa",
        "data.upstream=synth-okvqa", "data.train_n=32", "data.test_n=16", "data.upstream_n=4", "train.steps=40",
        "train.batch_size=8", "train.lr=5e-3"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "run"
    assert main(["centralized", "--out", str(out), *GRID]) == 0
    return out


def cell(grid, method: str) -> dict:
    return json.loads((grid / "cells" / f"tiny-vila__{method}__synth-scienceqa.json").read_text())


def run(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def predictions(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["lora", "last_layer"])  # a peft method and a selective one
def test_adapter_scores_equal_the_runs_own(grid, capsys, tmp_path, method):
    code, out, err = run(capsys, "eval", "--adapter", str(grid / "adapters/tiny-vila" / method / "synth-scienceqa"),
                         "--out", str(tmp_path / "e"))
    assert code == 0, err
    c = cell(grid, method)
    assert c["tuned_score"] != c["base_score"]  # the adapter changes answers: loading it matters
    scores = json.loads((tmp_path / "e" / "scores.json").read_text())
    assert scores["model"] == "tiny-vila" and scores["method"] == method
    assert scores["n"] == 16 and scores["seed"] == 0  # the run's test set, by default
    assert list(scores["scores"]) == ["synth-scienceqa"] and scores["scores"]["synth-scienceqa"]["score"] == c["tuned_score"]
    rows = predictions(tmp_path / "e")
    assert len(rows) == 16 and len({r["uid"] for r in rows}) == 16
    assert {"task", "uid", "question", "raw", "prediction", "references", "score"} <= set(rows[0])
    assert sum(r["score"] for r in rows) / 16 == pytest.approx(c["tuned_score"])  # exact_match: a per-sample mean


def test_plain_eval_writes_predictions_of_the_base(grid, capsys, tmp_path):
    code, _, err = run(capsys, "eval", "--model", "tiny-vila", "--tasks", "synth-scienceqa,synth-flickr30k", "--n", "16",
                       "--out", str(tmp_path / "e"))
    assert code == 0, err
    scores = json.loads((tmp_path / "e" / "scores.json").read_text())
    assert scores["adapter"] is None and scores["scores"]["synth-scienceqa"]["score"] == cell(grid, "lora")["base_score"]
    rows = predictions(tmp_path / "e")
    assert [r["task"] for r in rows] == ["synth-scienceqa"] * 16 + ["synth-flickr30k"] * 16
    assert all("score" not in r for r in rows if r["task"] == "synth-flickr30k")  # CIDEr-D: corpus-level only
    assert all(len(r["references"]) >= 1 for r in rows)


def test_adapter_outside_a_run_needs_and_checks_its_base(grid, capsys, tmp_path):
    loose = tmp_path / "loose"
    shutil.copytree(grid / "adapters/tiny-vila/lora/synth-scienceqa", loose)
    code, _, err = run(capsys, "eval", "--adapter", str(loose), "--model", "tiny-vila", "--tasks", "synth-scienceqa",
                       "--n", "16", "--out", str(tmp_path / "e"))
    assert code == 0, err
    score = json.loads((tmp_path / "e" / "scores.json").read_text())["scores"]["synth-scienceqa"]["score"]
    assert score == cell(grid, "lora")["tuned_score"]


def _bad_cases(grid, tmp):
    adapter = grid / "adapters/tiny-vila/lora/synth-scienceqa"
    loose = tmp / "loose"
    shutil.copytree(adapter, loose)
    return [
        (["--adapter", str(tmp / "missing")], "no such directory"),
        (["--adapter", str(grid)], "not an adapter directory"),
        (["--adapter", str(grid / "config.toml")], "is a file, not an adapter directory"),
        (["--adapter", str(adapter), "--model", "tiny-llava-ov"], "was tuned on 'tiny-vila'"),
        (["--adapter", str(loose)], "give the base with --model"),
        (["--adapter", str(loose), "--model", "tiny-llava-ov"], "was tuned on a 'llava' model"),
    ]


def test_bad_adapter_input_is_one_line_and_writes_nothing(grid, capsys, tmp_path):
    for extra, fragment in _bad_cases(grid, tmp_path):
        out = tmp_path / "e"
        code, _, err = run(capsys, "eval", *extra, "--out", str(out))
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (extra, err)
        assert lines[0].startswith("fedmllm eval: error: ") and fragment in lines[0], (extra, lines[0])
        assert not out.exists(), extra


def test_saved_residuals_are_added_to_the_base_weights(tmp_path):
    """An adapter saved with ``lora_residual.safetensors`` (residual LoRA rules) loads as W0 + R."""
    import torch
    from safetensors.torch import save_file

    from fedmllm.federated.lora import RESIDUAL_FILE, RESIDUAL_SUFFIX
    from fedmllm.federated.tuned import base_weight
    from fedmllm.methods.base import apply_method
    from fedmllm.models.registry import build_model
    from simulations.evaluate import Adapter, load_adapter

    tuned, method, _ = apply_method(build_model("tiny-vila", pretrained=False, seed=0).model, "lora", {})
    method.save(tuned, tmp_path)
    prefix = next(k.split("lora_A")[0] for k in method.get_state(tuned) if "lora_A" in k)
    w0 = base_weight(tuned, prefix).detach().clone()
    r = torch.full_like(w0, 0.25)
    save_file({prefix + RESIDUAL_SUFFIX: r}, str(tmp_path / RESIDUAL_FILE))
    loaded = load_adapter(build_model("tiny-vila", pretrained=False, seed=0).model, Adapter(tmp_path, "lora"),
                          "tiny-vila")
    assert torch.equal(base_weight(loaded, prefix), w0 + r)
