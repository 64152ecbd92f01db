"""End to end on Flower's Ray simulation backend: `run_federated` with 2 clients x 2 rounds.

Checks the run directory contract (the files README.md lists under "A run directory holds", see
also `fedmllm/runs.py`) and that the Ray run computes what the sequential reference computes;
then partial participation (reproducible sampling) with fault injection (a client that raises
every round) within the tolerated failure fraction. Each simulation starts
and stops its own Ray (Flower's backend calls ``ray.shutdown``); the fixture makes sure none is
left behind if a run dies.
"""

from __future__ import annotations

import json

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.federated.rounds import sampled_partitions
from fedmllm.federated.sequential import run_sequential_fedavg
from simulations.federated import run_federated

TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "eval.batch_size=32", "federated.num_clients=2",
        "federated.rounds=2", "federated.local_steps=2", "federated.upstream_n=2",
        "federated.upstream_every=1", "federated.save_every=1", "federated.partitioner=iid"]


@pytest.fixture(autouse=True)
def no_ray_left():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
        pytest.fail("a Ray runtime was left running after the simulation")


def events_of(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def load_adapter(path):
    """The saved adapter through peft on a freshly built base, as a user would load it."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    from fedmllm.models import build_model

    base = build_model("tiny-vila", pretrained=False, seed=0).model
    model = PeftModel.from_pretrained(base, str(path))
    loaded = get_peft_model_state_dict(model)
    saved = load_file(str(path / "adapter_model.safetensors"))
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    return saved


@pytest.mark.slow
def test_ray_run_writes_the_run_directory_and_matches_the_reference(tmp_path):
    cfg = load_config(None, [*TINY, 'federated.strategies=["fedavg", "scaffold"]',
                             'federated.baselines=["pooled"]'])
    run = run_federated(cfg, str(tmp_path / "run"))
    for name in ("config.toml", "meta.json", "metrics.jsonl", "results.json", "results.csv",
                 "report.md", "partition.json", "zeroshot.json"):
        assert (run / name).is_file(), name
    assert load_config(run / "config.toml") == cfg
    assert sorted(p.name for p in (run / "systems").glob("*.json")) == [
        "fedavg.json", "pooled.json", "scaffold.json"]
    assert list((run / "plots").glob("*.png"))
    results = json.loads((run / "results.json").read_text())
    assert [s["system"] for s in results["systems"]] == ["pooled", "fedavg", "scaffold"]
    events = events_of(run)
    for system in ("fedavg", "scaffold"):
        for r in (1, 2):
            mine = [e for e in events if e.get("system") == system and e.get("round") == r]
            assert sorted(e["client"] for e in mine if e["event"] == "client_train") == [0, 1]
            (rnd,) = [e for e in mine if e["event"] == "round"]
            assert (rnd["clients"], rnd["failed"]) == (2, 0)
            (ev,) = [e for e in mine if e["event"] == "global_eval"]
            assert set(ev["downstream"]) == set(cfg.data.downstream) and "F" in ev
            assert ev["divergence_from_pooled"] is not None
            assert (run / "adapters" / system / f"round-{r:03d}" / "adapter_config.json").is_file()
    scaffold_round = next(e for e in events if e.get("system") == "scaffold" and e["event"] == "round")
    fedavg_round = next(e for e in events if e.get("system") == "fedavg" and e["event"] == "round")
    assert scaffold_round["bytes_down"] == 2 * fedavg_round["bytes_down"]  # x and c travel down
    final = load_adapter(run / "adapters" / "fedavg" / "round-002")
    # The round loop aggregates with the same float64 weighted mean as the reference.
    reference, history = run_sequential_fedavg(cfg)
    assert history[0]["num_examples"] == [24, 24]
    assert max(float((final[k] - torch.as_tensor(reference[k])).abs().max()) for k in reference) <= 1e-6
    load_adapter(run / "adapters" / "scaffold" / "round-002")


@pytest.mark.slow
def test_ray_run_samples_by_seed_and_completes_despite_a_failing_client(tmp_path):
    """3 clients, 2 sampled per round (the partitions `sampled_partitions` names: the nodes'
    partition ids are asked once with query messages), one of them raising every round."""
    cfg = load_config(None, [*TINY, "federated.num_clients=3", "federated.clients_per_round=2",
                             "federated.fail_clients=[2]", "federated.max_failure_fraction=0.5",
                             "federated.baselines=[]", "federated.eval_every=2"])
    assert [sampled_partitions(cfg.seed, 3, 2, r) for r in (1, 2)] == [[0, 2], [0, 2]]  # seed 0
    run = run_federated(cfg, str(tmp_path / "run"))
    events = events_of(run)
    (asked,) = [e for e in events if e["event"] == "node_partitions"]
    assert (asked["asked"], asked["known"]) == (3, 3)
    failed = [e for e in events if e["event"] == "client_failed"]
    assert [(e["round"], e["error"]) for e in failed] == [  # the root cause, not Ray's traceback
        (r, f"RuntimeError: injected failure of client 2 in round {r}") for r in (1, 2)]
    rounds = [e for e in events if e["event"] == "round"]
    assert [(e["clients"], e["failed"]) for e in rounds] == [(1, 1), (1, 1)]
    assert [e["client"] for e in events if e["event"] == "client_train"] == [0, 0]
    assert [s["system"] for s in json.loads((run / "results.json").read_text())["systems"]] == ["fedavg"]
    assert (run / "adapters" / "fedavg" / "round-002" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_ray_run_with_heterogeneous_ranks(tmp_path):
    """flora, flexlora and hetlora with clients of LoRA rank 4 and 8 on Ray: every round
    aggregates both clients, replies carry each client's rank, adapters load in peft."""
    cfg = load_config(None, [*TINY, 'federated.strategies=["flora", "flexlora", "hetlora"]',
                             "federated.baselines=[]", "federated.client_ranks=[4, 8]"])
    run = run_federated(cfg, str(tmp_path / "run"))
    events = events_of(run)
    rounds = [e for e in events if e["event"] == "round"]
    assert [(e["system"], e["clients"], e["failed"]) for e in rounds] == [
        (s, 2, 0) for s in ("flora", "flexlora", "hetlora") for _ in (1, 2)]
    ups = {(e["system"], e["client"]): e["bytes_out"] for e in events if e["event"] == "client_train"}
    for system in ("flora", "flexlora", "hetlora"):
        assert ups[(system, 1)] > 1.8 * ups[(system, 0)]  # rank 8 uploads about twice rank 4
        load_adapter(run / "adapters" / system / "round-002")
    flora = [e for e in rounds if e["system"] == "flora"]
    assert all(e["lora_aggregation_error_rel"] <= 1e-6 for e in flora)  # exact with mixed ranks
