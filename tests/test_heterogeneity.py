"""Heterogeneous clients: per-client ranks and budgets resolve as documented, and every bad
setting is a one-line error (exit 2) before the run directory exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedmllm.config import load_config
from fedmllm.errors import UserError
from fedmllm.federated.heterogeneity import RANK_PROFILES, client_ranks, client_steps
from simulations.federated import check_federated

TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=2", "federated.rounds=1",
        "federated.local_steps=2", "federated.upstream_n=2", "federated.baselines=[]"]


def tiny(*overrides: str):
    return load_config(None, [*TINY, *overrides])


def test_ranks_and_budgets_resolve():
    assert client_ranks(tiny()) is None and client_steps(tiny()) is None
    assert client_ranks(tiny("federated.client_ranks=[8, 8]")) is None  # all the global rank (r = 8)
    assert client_ranks(tiny("federated.client_ranks=[2, 8]")) == [2, 8]
    cfg = tiny("federated.num_clients=6", "federated.rank_profile=edge-mix", "methods.lora.r=16")
    assert client_ranks(cfg) == [2, 4, 8, 16, 2, 4] and RANK_PROFILES["edge-mix"] == (2, 4, 8, 16)
    assert client_steps(tiny("federated.client_local_steps=[1, 3]")) == [1, 3]
    scoped = tiny("federated.client_ranks=[2, 8]", "federated.rank_scope=where-allowed")
    assert client_ranks(scoped, "fedavg") is None  # FedAvg needs equal ranks: all at r_g
    assert client_ranks(scoped) == [2, 8]


@pytest.mark.parametrize("overrides, message", [
    (["federated.client_ranks=[4]"], "federated.client_ranks has 1 entries for 2 clients"),
    (["federated.client_local_steps=[1, 2, 3]"], "federated.client_local_steps has 3 entries for 2 clients"),
    (["federated.client_local_steps=[0, 2]"], "federated.client_local_steps must hold positive integers"),
    (["federated.client_ranks=[4, 32]"], "client ranks [32] exceed the global adapter's rank methods.lora.r = 8"),
    (["methods.lora.r=4096", "federated.client_ranks=[4, 8]"], "LoRA rank 4096 exceeds the smallest adapted layer size"),
    (["federated.client_ranks=[4, 8]"], "strategy 'fedavg' needs equal LoRA ranks, but federated.client_ranks mixes [4, 8]"),
    (["federated.rank_profile=phones"], "unknown federated.rank_profile 'phones'; valid: edge-mix"),
    (["federated.rank_profile=edge-mix", "federated.client_ranks=[4, 8]"], "not both"),
    (["federated.method=ia3", "federated.client_ranks=[4, 8]"], "needs a LoRA-family method"),
])
def test_bad_heterogeneity_is_one_line_before_compute(overrides, message):
    with pytest.raises(UserError) as e:
        check_federated(tiny(*overrides))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mixed_ranks_name_the_rules_that_allow_them():
    from fedmllm.federated.algorithms import ALGORITHMS

    allowed = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).heterogeneous_ranks]
    with pytest.raises(UserError) as e:
        check_federated(tiny("federated.client_ranks=[4, 8]"))
    assert f"strategies that allow mixed ranks: {', '.join(allowed) or '(none)'}" in str(e.value)


def test_personalized_rule_needs_personalized_evaluation(monkeypatch):
    from fedmllm.federated.algorithms import ALGORITHMS

    name = next((n for n in ALGORITHMS.names() if ALGORITHMS.get(n).personalized), None)
    if name is None:  # no personalized rule registered yet: check the rule with FedAvg's flag flipped
        monkeypatch.setattr(ALGORITHMS.get("fedavg"), "personalized", True)
        name = "fedavg"
    with pytest.raises(UserError, match=f"strategy '{name}' is personalized"):
        check_federated(tiny(f'federated.strategies=["{name}"]', "federated.eval_personalized=false"))
    check_federated(tiny(f'federated.strategies=["{name}"]'))


def test_cli_rejects_bad_ranks_with_exit_2_and_no_run_dir(tmp_path):
    exe = Path(sys.executable).with_name("fedmllm")
    proc = subprocess.run([str(exe), "federated", "--out", str(tmp_path / "run"), *TINY,
                           "federated.client_ranks=[4]"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "client_ranks has 1 entries for 2 clients" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and not (tmp_path / "run").exists()
