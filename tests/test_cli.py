"""The command line on bad input: one clear line on stderr, exit code 2, no traceback."""

import json

import pytest

import fixtures_real as fx
from simulations.cli import main


def run(capsys, *argv):
    capsys.readouterr()  # drop output of the test's own set-up (fixture writing)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, fragment):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


def test_unknown_task(capsys, tmp_path):
    code, _, err = run(capsys, "eval", "--tasks", "synth-scienceqa,synth-okvq", "--out", str(tmp_path / "e"))
    assert_user_error(code, err, "unknown task 'synth-okvq'. Did you mean 'synth-okvqa'")
    assert not (tmp_path / "e").exists()


def test_missing_local_dataset_folder(capsys, tmp_path):
    code, _, err = run(capsys, "eval", "--tasks", "pathvqa", "--out", str(tmp_path / "e"), "model.name=tiny-vila",
                       "model.pretrained=false", f"data.sources={{pathvqa='{tmp_path / 'no_such_folder'}'}}")
    assert_user_error(code, err, "no_such_folder")


def test_corrupt_image_in_local_dataset(capsys, tmp_path):
    fx.write_parquet(tmp_path / "pv", "test", {"image": [fx.image(0), fx.CORRUPT],
                                               "question": ["q0?", "q1?"], "answer": ["a", "b"]})
    code, _, err = run(capsys, "eval", "--tasks", "pathvqa", "--out", str(tmp_path / "e"), "model.name=tiny-vila",
                       "model.pretrained=false", f"data.sources={{pathvqa='{tmp_path / 'pv'}'}}")
    assert_user_error(code, err, "corrupt or missing image")


def test_misspelt_config_key(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlearning_rate = 1e-3\n")
    code, _, err = run(capsys, "centralized", "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert_user_error(code, err, "unknown config key 'train.learning_rate'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, fragment", [
    (["centralized.methods=lora,loar"], "unknown method 'loar'"),
    (["train.lr=0"], "'train.lr' must be > 0"),
    (["centralized.methods=top_layers", "methods.top_layers.k=9"], "9"),
    (["data.downstream=synth-okvqa"], "has role 'upstream', expected 'downstream'"),
])
def test_centralized_bad_input_before_compute(capsys, tmp_path, overrides, fragment):
    out = tmp_path / "run"
    code, _, err = run(capsys, "centralized", "--out", str(out), "model.pretrained=false",
                       "centralized.models=tiny-vila", *overrides)
    assert_user_error(code, err, fragment)
    assert not out.exists()


def test_eval_writes_scores(capsys, tmp_path):
    code, out, err = run(capsys, "eval", "--model", "tiny-vila", "--tasks", "synth-chd", "--n", "4",
                         "--out", str(tmp_path / "e"), "model.pretrained=false")
    assert code == 0, err
    assert "synth-chd" in out and "exact_match" in out
    scores = json.loads((tmp_path / "e" / "scores.json").read_text())
    assert scores["scores"]["synth-chd"]["n"] == 4


def test_list_names_every_registry(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for word in ("tiny-llava-ov", "synth-mme", "cider_d", "lora", "task_dirichlet", "scaffold"):
        assert word in out
