"""Config loading, overrides and validation; every shipped config file loads."""

from pathlib import Path

import pytest

from fedmllm.config import Config, apply_overrides, diff, dumps, load_config, method_options
from fedmllm.errors import UserError

CONFIGS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").rglob("*.toml"))


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=2e-3", "model.name=tiny-vila", "data.downstream=synth-chd,synth-rsvqa",
                             "federated.rounds=3"])
    assert cfg.train.lr == 2e-3 and cfg.model.name == "tiny-vila"
    assert cfg.data.downstream == ["synth-chd", "synth-rsvqa"] and cfg.federated.rounds == 3


@pytest.mark.parametrize("override, fragment", [
    ("train.lrr=1", "unknown config key 'train.lrr'. Did you mean 'train.lr'?"),
    ("trian.lr=1", "unknown config key 'trian'"),
    ("train.lr=0", "'train.lr' must be > 0"),
    ("train.lr=-1e-3", "'train.lr' must be > 0"),
    ("train.steps=abc", "'train.steps' must be int"),
    ("train.precision=fp16", "valid: auto, fp32, bf16"),
    ("federated.clients_per_round=100", "exceeds federated.num_clients"),
    ("federated.alpha=0", "'federated.alpha' must be > 0"),
    ("federated.baselines=pooled,global", "unknown baseline 'global'"),
    ("methods.lora.lr=0", "methods.lora.lr must be > 0"),
    ("lr", "must look like key=value"),
])
def test_invalid_values_are_one_line_user_errors(override, fragment):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("train.lr=nan", "train.lr"), ("train.lr=inf", "train.lr"), ("train.lr=-inf", "train.lr"),
    ("train.epochs=nan", "train.epochs"), ("federated.alpha=inf", "federated.alpha"),
    ("federated.max_failure_fraction=nan", "federated.max_failure_fraction"),
    ("methods.lora.lr=inf", "methods.lora.lr"),
])
def test_non_finite_floats_are_user_errors_naming_the_key(override, key):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    assert f"config key {key!r} must be a finite number, got " in str(err.value)


def test_non_finite_float_in_file(tmp_path):
    p = tmp_path / "nan.toml"
    p.write_text("[train]\nlr = nan\n")
    with pytest.raises(UserError, match="'train.lr' must be a finite number, got nan"):
        load_config(p)


def test_int_given_for_float_key_becomes_float():
    cfg = load_config(None, ["train.lr=1", "methods.lora.lr=2"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert method_options(cfg, "lora") == ({}, 2.0)


def test_misspelt_key_in_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nbatch_sise = 8\n")
    with pytest.raises(UserError, match="Did you mean 'train.batch_size'"):
        load_config(p)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr=1")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)


def test_roundtrip_and_diff(tmp_path):
    cfg = load_config(None, ["methods.lora.r=4", "methods.lora.lr=5e-3"])
    p = tmp_path / "c.toml"
    p.write_text(dumps(cfg))
    again = load_config(p)
    assert diff(cfg, again) == []
    assert method_options(again, "lora") == ({"r": 4}, 5e-3)
    assert method_options(again, "full_st") == ({}, again.train.lr)
    other = load_config(p, ["train.steps=7"])
    assert diff(cfg, other) == ["train.steps"]


def test_override_nested_table():
    data = apply_overrides({}, ["strategy_options.fedprox.proximal_mu=0.1"])
    assert data == {"strategy_options": {"fedprox": {"proximal_mu": 0.1}}}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_file_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
