"""``flwr run .`` as a Flower user runs it: the run config, the shipped checkpoint found from the
installed package when Flower's app bundle lacks it, nothing in the project rewritten, and Flower's
local SuperLink (which ``flwr run`` leaves running by design) stopped by PID."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib

import pytest
from flower_procs import BIN, ROOT, base_env, copy_project, flower_root, marked, snapshot, stop

from fedmllm.errors import UserError
from fedmllm.models import registry
from fedmllm.models.shipped import installed_checkpoints, shipped_folder
from server.run_config import APP_DIR, TYPED, config_path, from_run_config, typed_overrides
from simulations.deploy import free_port


def test_typed_run_config_keys_map_onto_the_config():
    run_config = {"num-server-rounds": 3, "local-steps": 0, "num-clients": 2, "strategies": "fedavg, fedprox",
                  "lr": 0.0}
    assert typed_overrides(run_config) == ["federated.rounds=3", "federated.num_clients=2",
                                           'federated.strategies=["fedavg", "fedprox"]']
    with pytest.raises(UserError, match="num-server-rounds = 'three' is not an int"):
        typed_overrides({"num-server-rounds": "three"})


def test_the_pyproject_run_config_has_every_typed_key_and_no_federations():
    """flwr accepts a --run-config key only if pyproject declares it; a [tool.flwr.federations]
    section would be migrated out of pyproject.toml (rewriting it) by flwr >= 1.42."""
    flwr = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]
    assert "federations" not in flwr
    declared = flwr["app"]["config"]
    assert {"config", "out", "overrides", "mode", *TYPED} == set(declared)
    assert typed_overrides(declared) == []  # the defaults keep the config file's values
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.11"


def test_run_config_mode_selects_the_experiment_and_collab_is_validated_first(tmp_path):
    """``mode = "collab"`` runs the large-small collaboration of the config (server/app.py); its
    config is checked before the run directory exists, like ``fedmllm collab``'s."""
    from server.run_config import run_mode

    assert run_mode({}) == "federated" and run_mode({"mode": "collab"}) == "collab"
    with pytest.raises(UserError, match="run config mode = 'kd'; valid: federated, collab"):
        run_mode({"mode": "kd"})
    with pytest.raises(UserError, match="collab.large"):
        from_run_config({"config": "configs/collab/embedded.toml", "mode": "collab", "out": str(tmp_path / "run"),
                         "overrides": "collab.large=/nonexistent/large federated.backend=inprocess"})
    assert not (tmp_path / "run").exists()


def test_config_path_is_relative_to_the_app_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path({"config": "configs/federated/embedded.toml"}) == APP_DIR / "configs/federated/embedded.toml"
    assert config_path({"config": str(tmp_path / "x.toml")}) == tmp_path / "x.toml"
    cfg, out = from_run_config({"config": "configs/federated/embedded.toml", "out": str(tmp_path / "run"),
                                "num-server-rounds": 2, "overrides": "federated.rounds=4 'federated.baselines=[]'"})
    assert (cfg.federated.rounds, cfg.federated.baselines) == (4, [])  # overrides come after the typed keys
    assert (out / "config.toml").is_file()


def test_a_bundle_copy_without_weights_loads_the_installed_checkpoint(tmp_path, monkeypatch):
    """A FAB carries config.json but not model.safetensors: the weights come from the installed package."""
    installed = installed_checkpoints()
    assert installed is not None and (installed / "tiny-vila" / "model.safetensors").is_file()
    bundle = tmp_path / "tiny-vila"
    shutil.copytree(installed / "tiny-vila", bundle, ignore=shutil.ignore_patterns("*.safetensors"))
    assert shipped_folder(bundle) == installed / "tiny-vila"
    monkeypatch.setattr(registry, "CHECKPOINTS", tmp_path)
    assert registry.checkpoint_dir("tiny-vila") == installed / "tiny-vila"
    monkeypatch.setattr("fedmllm.models.shipped.installed_checkpoints", lambda: None)
    with pytest.raises(UserError, match="carries only text files"):
        registry.build_model("tiny-vila")


RUN_CONFIG = ("out='{out}' num-server-rounds=1 local-steps=2 num-clients=2 strategies='fedavg' "
              "overrides='data.train_n=8 data.test_n=4 data.upstream_n=4 federated.upstream_n=2 "
              "train.batch_size=4 federated.baselines=[] tracking=[]'")


@pytest.mark.slow
def test_flwr_run_local_simulation(tmp_path):
    """`flwr run .` on Flower's local simulation SuperLink, from a copy of the project: the shipped
    (pretrained) checkpoint loads, the run directory is complete, the tree is unchanged, and once
    the SuperLink is stopped no process the run started is left."""
    app = copy_project(tmp_path / "app")
    before, out = snapshot(app), tmp_path / "run"
    with flower_root() as root:
        ports = {k: str(free_port()) for k in ("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "FLWR_LOCAL_CONTROL_API_PORT")}
        env = base_env(FLWR_HOME=str(root / "flwr"), RAY_TMPDIR=str(root / "ray"),
                       FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", **ports)
        (root / "ray").mkdir()
        res = subprocess.run([str(BIN / "flwr"), "run", ".", "--stream", "--federation-config", "num-supernodes=2",
                              "--run-config", RUN_CONFIG.format(out=out)],
                             cwd=app, env=env, capture_output=True, text=True, timeout=300)
        log = res.stdout + res.stderr
        left = marked(root)
        names = {" ".join(p.cmdline()[:2]) for p in left}
        stop(left)
        assert marked(root) == []
    assert res.returncode == 0 and "fedmllm: error" not in log and "Traceback" not in log, log[-4000:]
    assert any("flower-superlink" in n for n in names)  # Flower keeps its local SuperLink running
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert (cfg["federated"]["rounds"], cfg["federated"]["local_steps"], cfg["model"]["pretrained"]) == (1, 2, True)
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(e["system"], e["round"]) for e in events if e["event"] == "round"] == [("fedavg", 1)]
    assert json.loads((out / "results.json").read_text())["systems"][0]["system"] == "fedavg"
    assert snapshot(app) == before  # nothing in the project rewritten (pyproject.toml included)
