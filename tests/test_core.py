"""The federated core's contracts on the real client runtime: state plans (shared / local /
frozen keys), the client store, resolved options in config.toml and `fedmllm config`, and the
in-process engine end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedmllm.config import load_config
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import GLOBAL, MODEL, STATE, Payload, StatePlan
from fedmllm.federated.algorithms.fedavg import FedAvg
from fedmllm.federated.client import ClientStore
from fedmllm.federated.experiment import resolve_strategy_options
from fedmllm.federated.sequential import default_runtime

TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=2", "federated.rounds=2",
        "federated.local_steps=2", "federated.upstream_n=2", "federated.baselines=[]"]


class KeepBLocal(FedAvg):
    """FedSA-LoRA-shaped test plan: A shared, B kept on the client."""

    name = "test-keep-b-local"

    def plan(self, client, shapes):
        return StatePlan(shared=tuple(k for k in shapes if "lora_B" not in k),
                         local=tuple(k for k in shapes if "lora_B" in k))


class FreezeA(FedAvg):
    """FFA-LoRA-shaped test plan: A frozen on the client, B trained."""

    name = "test-freeze-a"

    def client_plan(self, payload, shapes, received):
        return StatePlan(shared=tuple(k for k in shapes if "lora_B" in k),
                         frozen=tuple(k for k in shapes if "lora_A" in k))


@pytest.fixture(scope="module")
def runtime():
    return default_runtime(load_config(None, TINY))


def round_config(server_round: int, name: str) -> dict:
    return {P.SERVER_ROUND: server_round, P.LR: 1e-2, P.LOCAL_STEPS: 2, P.ALGORITHM: name}


def test_local_keys_stay_on_the_client_and_carry_over_rounds(runtime):
    algo = KeepBLocal()
    runtime._algorithms[algo.name] = algo
    x = dict(runtime.initial)
    b_keys = [k for k in x if "lora_B" in k]
    assert b_keys and all(not x[k].any() for k in b_keys)  # LoRA's B starts at zero
    payload = algo.configure(1, 0, x)
    assert set(payload.arrays[GLOBAL]) == set(x) - set(b_keys)  # B never travels down
    payload.config.update(round_config(1, algo.name))
    first = runtime.run_round(0, payload, {})
    assert set(first.arrays[STATE]) == set(x) - set(b_keys)  # ... nor up
    own_b = first.local_state[MODEL]
    assert set(own_b) == set(b_keys) and any(own_b[k].any() for k in b_keys)  # trained, kept
    state, _, plan = algo.prepare(algo.configure(2, 0, x), first.local_state, runtime.method, runtime.initial)
    assert plan.local == tuple(b_keys)
    assert all(np.array_equal(state[k], own_b[k]) for k in b_keys)  # round 2 starts from its own B


def test_frozen_keys_do_not_train(runtime):
    algo = FreezeA()
    runtime._algorithms[algo.name] = algo
    x = dict(runtime.initial)
    payload = Payload({GLOBAL: {k: v for k, v in x.items() if "lora_B" in k}}, round_config(1, algo.name))
    update = runtime.run_round(1, payload, {})
    params = runtime.method.state_parameters(runtime.model)
    a_keys = [k for k in x if "lora_A" in k]
    assert all(params[k].requires_grad for k in a_keys)  # restored after the round
    live = {k: p.detach().numpy() for k, p in params.items()}
    assert all(np.array_equal(live[k], x[k]) for k in a_keys)  # A never moved
    assert set(update.arrays[STATE]) == {k for k in x if "lora_B" in k}
    assert any(np.abs(update.arrays[STATE][k]).max() > 0 for k in update.arrays[STATE])  # B trained


def test_state_plan_rejects_a_key_in_two_roles():
    with pytest.raises(ValueError, match="both shared and local"):
        StatePlan(shared=("a",), local=("a",))


@pytest.mark.parametrize("root", ["disk", None])
def test_client_store_reads_the_round_before_and_prunes(tmp_path, root):
    store = ClientStore(tmp_path / "store" if root else None)
    state = lambda v: {"g": {"x": np.full((2,), v, np.float32), "y": np.zeros((), np.float32)}}  # noqa: E731
    assert store.load("s", 0, 1) == {}
    for r in (1, 2, 3):
        store.save("s", 0, r, state(float(r)))
    assert store.load("s", 0, 4)["g"]["x"].tolist() == [3.0, 3.0]
    assert store.load("s", 0, 3)["g"]["x"].tolist() == [2.0, 2.0]  # a redo of round 3 reads round 2
    assert store.load("s", 0, 3)["g"]["y"].shape == ()  # 0-d stays 0-d
    assert list(store.load("s", 0, 4)["g"]) == ["x", "y"]  # saved key order
    assert store.load("s", 1, 4) == {}  # per client
    if root:
        files = sorted(p.name for p in (tmp_path / "store" / "s" / "0").iterdir())
        assert files == ["round-0002.safetensors", "round-0003.safetensors"]
    store.save("s", 0, 3, state(9.0))  # a redone round overwrites
    assert store.load("s", 0, 4)["g"]["x"].tolist() == [9.0, 9.0]


def test_resolved_strategy_options_are_recorded_and_shown(tmp_path):
    cfg = resolve_strategy_options(load_config(None, [*TINY, 'federated.strategies=["fedadam", "scaffold"]',
                                                      "strategy_options.fedadam.eta=0.05"]))
    assert cfg.strategy_options["fedadam"] == {"eta": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3,
                                               "v_init": pytest.approx(1e-6)}
    assert cfg.strategy_options["scaffold"] == {"server_lr": 1.0, "num_clients": 2, "control": "option2"}
    from fedmllm.runs import RunDir

    run = RunDir.create(tmp_path / "run", cfg, "federated")
    saved = load_config(run.path / "config.toml")
    assert saved.strategy_options == cfg.strategy_options
    assert resolve_strategy_options(saved) == saved  # resolving twice changes nothing (resume)
    out = subprocess.run([str(Path(sys.executable).with_name("fedmllm")), "config"], capture_output=True,
                         text=True, timeout=120).stdout
    assert "[strategy_options.fedadam] eta = 0.01, beta_1 = 0.9, beta_2 = 0.99, tau = 0.001, v_init = 1e-06" in out
    assert "[strategy_options.multikrum] num_malicious_nodes = 0, num_nodes_to_select = 1" in out


@pytest.mark.slow
def test_inprocess_engine_runs_the_whole_experiment(tmp_path):
    """`fedmllm federated` with federated.backend=inprocess: every artifact, no Ray."""
    from simulations.federated import run_federated

    cfg = load_config(None, [*TINY, 'federated.strategies=["fedavg", "fedmedian"]', "federated.backend=inprocess",
                             'federated.baselines=["pooled"]', "federated.instrument=false"])
    run = run_federated(cfg, str(tmp_path / "run"))
    results = json.loads((run / "results.json").read_text())
    assert [s["system"] for s in results["systems"]] == ["pooled", "fedavg", "fedmedian"]
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] == "client_train"]  # instrument off
    rounds = [e for e in events if e["event"] == "round"]
    assert len(rounds) == 4 and all("drift" not in e and e["bytes_up"] > 0 for e in rounds)
    assert (run / "checkpoints" / "fedavg" / "round-0002" / "global.safetensors").is_file()


@pytest.mark.parametrize("name, options, needed", [("krum", {}, 3), ("multikrum", {"num_malicious_nodes": 1}, 5),
                                                   ("bulyan", {"num_malicious_nodes": 1}, 7)])
def test_robust_rules_need_enough_clients_before_any_compute(name, options, needed):
    from fedmllm.errors import UserError
    from simulations.federated import check_federated

    table = ", ".join(f"{k} = {v}" for k, v in options.items())
    cfg = load_config(None, [*TINY, f'federated.strategies=["{name}"]', f"strategy_options.{name}={{{table}}}"])
    with pytest.raises(UserError, match=f"needs at least {needed} clients per round"):
        check_federated(cfg)


@pytest.mark.slow
def test_exact_lora_rules_remove_the_aggregation_error_in_the_same_run(tmp_path):
    """One in-process run: the relative LoRA aggregation error is ~0 every round for the exact
    rules and > 0 for FedIT; personalized scores are reported for every system."""
    from simulations.federated import run_federated

    cfg = load_config(None, [*TINY, "federated.rounds=2", "federated.backend=inprocess",
                             'federated.strategies=["fedit", "ffa_lora", "fedex_lora", "flora", "rolora", "fedsvd"]'])
    run = run_federated(cfg, str(tmp_path / "run"))
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    errors = {}
    for e in events:
        if e["event"] == "round":
            errors.setdefault(e["system"], []).append(e["lora_aggregation_error_rel"])
    assert all(len(v) == 2 for v in errors.values()) and set(errors) == set(cfg.federated.strategies)
    assert min(errors["fedit"]) > 1e-3
    for exact in ("ffa_lora", "fedex_lora", "flora", "rolora", "fedsvd"):
        assert max(errors[exact]) <= 1e-6, (exact, errors[exact])
    personal = [e for e in events if e["event"] == "personalized_eval"]
    assert len(personal) == 2 * 6 and all(set(p["clients"]) == {"0", "1"} for p in personal)
    results = json.loads((run / "results.json").read_text())
    assert all("personalized" in s for s in results["systems"])


def test_pooled_is_one_client_fedavg_when_the_union_is_one_client(tmp_path):
    """The pooled baseline trains with the clients' schedule, per-step semantics and seeds: with
    one client holding everything, pooled and FedAvg end in the same adapter, bit for bit."""
    from safetensors.numpy import load_file

    from simulations.federated import run_federated

    cfg = load_config(None, [*TINY, "federated.num_clients=1", "federated.backend=inprocess",
                             'federated.strategies=["fedavg"]', 'federated.baselines=["pooled", "local"]',
                             "federated.eval_personalized=false"])
    run = run_federated(cfg, str(tmp_path / "run"))
    states = {s: load_file(str(run / "adapters" / s / "round-002" / "adapter_model.safetensors"))
              for s in ("pooled", "fedavg")}
    assert set(states["pooled"]) == set(states["fedavg"])
    assert all(np.array_equal(states["pooled"][k], states["fedavg"][k]) for k in states["pooled"])
    assert any(np.abs(v).max() > 0 for k, v in states["fedavg"].items() if "lora_B" in k)  # it trained
    systems = {s: json.loads((run / "systems" / f"{s}.json").read_text()) for s in ("fedavg", "local")}
    assert systems["local"]["downstream"] == systems["fedavg"]["downstream"]  # local = its own FedAvg
    assert systems["local"]["upstream"] == systems["fedavg"]["upstream"]


# Both baselines beside one strategy; client 1's federated rounds fail (fault injection), its
# local baseline still trains (a baseline's job is not a federated round).
BASELINES = [*TINY, "federated.backend=inprocess", "federated.rounds=3", 'federated.strategies=["fedavg"]',
             'federated.baselines=["pooled", "local"]', "federated.fail_clients=[1]"]


def without_placement(obj):
    """``obj`` without wall-clock fields and where the baselines trained."""
    if isinstance(obj, dict):
        return {k: without_placement(v) for k, v in obj.items() if k not in ("seconds", "trained_on")}
    if isinstance(obj, list):
        return [without_placement(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def baselines_in_server(tmp_path_factory):
    from simulations.federated import run_federated

    cfg = load_config(None, [*BASELINES, "federated.baseline_placement=server"])
    return run_federated(cfg, str(tmp_path_factory.mktemp("server") / "run"))


def assert_same_baselines(run: Path, reference: Path) -> None:
    results = json.loads((run / "results.json").read_text())
    assert without_placement(results) == without_placement(json.loads((reference / "results.json").read_text()))
    for name in ("checkpoints/pooled/final.safetensors", "adapters/pooled/round-003/adapter_model.safetensors"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name  # bit for bit
    assert not list((run / "checkpoints").glob("*.segment.safetensors"))  # consumed


def test_baselines_on_the_clients_equal_the_baselines_in_the_server(baselines_in_server, tmp_path):
    """federated.baseline_placement = clients: each round the pooled job and both local jobs go to
    the clients in one exchange (pooled beside partition 0's own job, on the same node); the
    result is the server-side baselines' bit for bit."""
    from simulations.federated import run_federated

    cfg = load_config(None, [*BASELINES, "federated.baseline_placement=clients"])
    run = run_federated(cfg, str(tmp_path / "run"))
    assert_same_baselines(run, baselines_in_server)
    systems = {s["system"]: s for s in json.loads((run / "results.json").read_text())["systems"]}
    assert (systems["pooled"]["trained_on"], systems["local"]["trained_on"]) == ("clients", "clients")
    assert systems["local"]["clients"] == 2  # client 1's local baseline trained despite fail_clients
    reference = json.loads((baselines_in_server / "systems" / "pooled.json").read_text())
    assert reference["trained_on"] == "server"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] == "baseline_job_failed"]
    assert [e["client"] for e in events if e["event"] == "client_failed"] == [1, 1, 1]  # fedavg's rounds


def test_a_bad_baseline_reply_is_rejected_and_the_server_finishes_that_baseline(
        baselines_in_server, tmp_path, monkeypatch):
    """The pooled job's round-2 reply carries NaN: it is rejected (never saved), the pooled
    baseline continues in the server from its round-1 state, and the result is unchanged."""
    from fedmllm.federated.algorithms import STATE
    from fedmllm.federated.client import ClientRuntime
    from simulations.federated import run_federated

    real = ClientRuntime.run_round

    def poisoned(self, partition_id, payload, local_state):
        update = real(self, partition_id, payload, local_state)
        if payload.config.get(P.POOLED) and int(payload.config[P.SERVER_ROUND]) == 2:
            update.arrays[STATE] = {k: np.full_like(v, np.nan) for k, v in update.arrays[STATE].items()}
        return update

    monkeypatch.setattr(ClientRuntime, "run_round", poisoned)
    cfg = load_config(None, [*BASELINES, "federated.baseline_placement=clients"])
    run = run_federated(cfg, str(tmp_path / "run"))
    assert_same_baselines(run, baselines_in_server)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (failed,) = [e for e in events if e["event"] == "baseline_job_failed"]
    assert (failed["baseline"], failed["round"]) == ("pooled", 2)
    assert "invalid reply" in failed["error"] and "non-finite" in failed["error"]
