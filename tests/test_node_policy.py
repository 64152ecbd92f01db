"""A client node checks what a message asks before it loads anything (`fedmllm.federated.node_policy`).

Refusals go through the real ClientApp over `InProcessGrid` (Flower's wire format both ways), each
answered by an error reply whose reason says why; no model is built for a refused experiment.
Acceptance is checked on `NodePolicy` directly (training through the policy is what every
in-process test in test_federated.py does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message

import clients.app as client_app
from fedmllm.config import dumps, load_config
from fedmllm.federated import client as client_module
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import GLOBAL, Payload
from fedmllm.federated.client import config_key
from fedmllm.federated.node_policy import InstructionRefusedError, NodePolicy
from fedmllm.runs import RunDir
from server.inprocess import NODE_BASE, InProcessGrid
from server.records import encode_payload
from server.strategy import error_summary

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py

TINY = ["model.name=tiny-vila", "model.pretrained=false", "federated.num_clients=1", "tracking=[]"]


def run_dir(path: Path, *overrides: str, kind: str = "federated") -> Path:
    """A run directory as `RunDir.create` writes it (config.toml, meta.json)."""
    RunDir.create(path, load_config(None, [*TINY, *overrides]), kind)
    return path


def train_message(experiment: Path, store: str | None = None, experiment_id: str | None = None) -> Message:
    """A train instruction naming ``experiment`` (and its ``clients/`` store unless ``store``)."""
    exp_id = experiment_id or config_key((experiment / "config.toml").read_text())
    config = {P.SERVER_ROUND: 1, P.LR: 1e-3, P.LOCAL_STEPS: 1, P.ALGORITHM: "fedavg", P.SYSTEM: "fedavg",
              P.EXPERIMENT_ID: exp_id, P.EXPERIMENT_DIR: str(experiment),
              P.CLIENT_STORE: str(experiment / "clients") if store is None else store}
    return Message(encode_payload(Payload({GLOBAL: {"w": np.zeros(2, np.float32)}}, config)), NODE_BASE, "train")


def deliver(msg: Message, **node_config) -> str:
    """The error reason of the node's reply (fails if the node accepted)."""
    grid = InProcessGrid(client_app.app, 1)
    grid.contexts[NODE_BASE].node_config.update(node_config)
    reply = grid.deliver(msg)
    assert reply.has_error(), "the node accepted an instruction it should refuse"
    return str(reply.error.reason)


def test_a_pinned_node_refuses_another_experiment(tmp_path):
    mine, other = run_dir(tmp_path / "mine"), run_dir(tmp_path / "other", "seed=1")
    reason = deliver(train_message(other), **{"fedmllm-experiment": str(mine)})
    assert reason.startswith("InstructionRefusedError: experiment directory")
    assert f"{str(other)!r} is not the one this node serves (fedmllm-experiment = {str(mine)!r})" in reason
    # what the server logs: the refusal itself, not a traceback
    assert error_summary(reason) == reason


@pytest.mark.parametrize("case, expected", [
    ("no meta.json", "is not a fedmllm run directory (no config.toml and meta.json)"),
    ("centralized", "is not a federated or collab run directory (meta.json kind 'centralized')"),
    ("wrong id", "config.toml is not experiment 0123456789abcdef"),
])
def test_only_federated_run_directories_of_the_named_experiment_are_served(tmp_path, case, expected):
    exp = run_dir(tmp_path / "exp", kind="centralized" if case == "centralized" else "federated")
    if case == "no meta.json":
        (exp / "meta.json").unlink()
    msg = train_message(exp, experiment_id="0123456789abcdef" if case == "wrong id" else None)
    assert expected in deliver(msg)


@pytest.mark.parametrize("store", ["{tmp}/elsewhere", "{exp}/../elsewhere", "/etc"])
def test_the_client_store_must_lie_inside_the_experiment(tmp_path, store):
    exp = run_dir(tmp_path / "exp")
    reason = deliver(train_message(exp, store=store.format(tmp=tmp_path, exp=exp)))
    assert "is outside the experiment directory" in reason and "set fedmllm-state-dir" in reason


@pytest.mark.parametrize("overrides, node_config, expected", [
    ([], {"fedmllm-models": "tiny-llava-ov, my-org/big-model"},
     "model 'tiny-vila' is not one this node may build (fedmllm-models = tiny-llava-ov, my-org/big-model)"),
    (['data.sources={ "synth-chd" = "{tmp}/private/chd" }'], {"fedmllm-data-root": "{tmp}/data"},
     "data source '{tmp}/private/chd' of task 'synth-chd' is outside this node's data "
     "(fedmllm-data-root = '{tmp}/data')"),
    (['data.sources={ "synth-chd" = "{tmp}/data/../private" }'], {"fedmllm-data-root": "{tmp}/data"},
     "data source '{tmp}/data/../private' of task 'synth-chd' is outside"),
])
def test_a_node_refuses_models_and_data_it_was_not_configured_with(tmp_path, overrides, node_config, expected):
    fill = lambda s: s.replace("{tmp}", str(tmp_path))  # noqa: E731
    exp = run_dir(tmp_path / "exp", *map(fill, overrides))
    msg = train_message(exp)
    reason = deliver(msg, **{k: fill(v) for k, v in node_config.items()})
    assert fill(expected) in reason
    # refused before anything was built from the config
    assert config_key((exp / "config.toml").read_text()) not in client_module._RUNTIMES


def test_what_a_node_accepts(tmp_path):
    exp = run_dir(tmp_path / "exp", 'data.sources={ "synth-chd" = "%s/data/chd", "synth-gqa" = "org/gqa" }' % tmp_path)
    cfg = load_config(exp / "config.toml")
    pinned = NodePolicy.from_node_config({"fedmllm-experiment": str(exp)})
    assert pinned.experiment_dir(None) == pinned.experiment_dir(str(exp / ".." / "exp")) == str(exp.resolve())
    free = NodePolicy()
    assert free.client_store(str(exp / "clients"), str(exp)) == str((exp / "clients").resolve())
    assert free.client_store("", str(exp)) == ""  # in memory
    own = NodePolicy.from_node_config({"fedmllm-state-dir": str(tmp_path / "state")})
    assert own.client_store("/anywhere", str(exp)) == str(tmp_path / "state")  # the node's, not the message's
    node = NodePolicy.from_node_config({"fedmllm-models": "tiny-llava-ov,tiny-vila",
                                        "fedmllm-data-root": str(tmp_path / "data")})
    assert node.models == ("tiny-llava-ov", "tiny-vila")
    node.check_config(cfg)  # a local folder inside the data root, a hub id
    with pytest.raises(InstructionRefusedError, match="names no experiment directory"):
        free.experiment_dir(None)


def test_a_deployed_node_refuses_the_pooled_baselines_union(tmp_path):
    """A pooled-baseline job trains on every partition's data: a simulated node (no node config
    of its own) takes it, a node configured for a deployment refuses it before loading anything."""
    exp = run_dir(tmp_path / "exp")
    msg = train_message(exp)
    msg.content[P.CONFIG][P.BASELINE] = 1
    msg.content[P.CONFIG][P.POOLED] = 1
    reason = deliver(msg, **{"fedmllm-experiment": str(exp)})
    assert "serves its own partition only" in reason and 'federated.baseline_placement = "server"' in reason
    assert config_key((exp / "config.toml").read_text()) not in client_module._RUNTIMES
    NodePolicy().check_job({P.BASELINE: 1, P.POOLED: 1})  # a simulated node
    NodePolicy.from_node_config({"fedmllm-experiment": str(exp)}).check_job({P.BASELINE: 1})  # a local job
