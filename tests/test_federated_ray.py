"""End to end on Flower's Ray simulation backend: `run_federated` with 2 clients x 2 rounds.

Checks the run directory contract (the files README.md lists under "A run directory holds", see
also `fedmllm/runs.py`) and that the Ray run computes what the sequential reference computes;
then partial participation (reproducible sampling) with fault injection (a client that raises
every round) within the tolerated failure fraction. Each simulation starts
and stops its own Ray (Flower's backend calls ``ray.shutdown``); the fixture makes sure none is
left behind if a run dies. While the first and the last run train (Ray not yet imported / imported
before), a background thread reads the listening sockets of every process the run started: all
must be bound to loopback, and the run's Ray temp dir must be its own and gone afterwards
(`simulations.ray_backend`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import threading
from pathlib import Path

import psutil
import pytest
import torch

from fedmllm.config import load_config
from fedmllm.errors import UserError
from fedmllm.federated.rounds import sampled_partitions
from fedmllm.federated.sequential import run_sequential_fedavg
from simulations.federated import check_federated, run_federated
from simulations.ray_backend import SINGLE_MACHINE_ENV, backend_config, ray_session

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


class Poller:
    """Calls ``poll()`` every ``interval`` seconds in a background thread while the block runs;
    ``_before`` holds this process's listening sockets at the start (not the run's)."""

    def __init__(self, interval: float = 0.25):
        self.interval, self._stop = interval, threading.Event()

    @staticmethod
    def _listening(proc: psutil.Process) -> set[tuple[str, int]]:
        return {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN}

    def poll(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._before = self._listening(psutil.Process())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class ListeningSockets(Poller):
    """The listening TCP sockets of the processes started while the block runs: this process's
    descendants (GCS, raylet, agents, workers) and this process's own new ones (the driver's core
    worker), polled by a background thread; plus the Ray temp dirs named on their command lines."""

    TEMP = re.compile(r"(/[^\s=]*/fedmllm_ray_[^/\s]+)/")

    def __init__(self, interval: float = 0.25):
        super().__init__(interval)
        self.seen: dict[tuple[str, int], str] = {}  # (ip, port) -> process name
        self.temp_dirs: set[str] = set()

    def poll(self) -> None:
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                name, cmdline, listening = proc.name(), " ".join(proc.cmdline()), self._listening(proc)
            except psutil.Error:
                continue  # exited (or became a zombie) between listing and reading
            self.temp_dirs.update(self.TEMP.findall(cmdline + " "))
            for addr in listening - self._before:
                self.seen.setdefault(addr, name)


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or IPv4-mapped loopback (::ffff:127.0.0.1, how gRPC's dual-stack
    sockets show an IPv4 loopback bind); 0.0.0.0, :: and interface addresses are not."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def assert_ray_stayed_on_loopback(sockets: ListeningSockets) -> None:
    """Every socket the run's Ray listened on is loopback; its temp dir was its own and is gone."""
    names = set(sockets.seen.values())  # the check saw the run's Ray, it is not vacuous
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), sockets.seen
    assert not {a: n for a, n in sockets.seen.items() if not is_loopback(a[0])}, sockets.seen
    (temp,) = sockets.temp_dirs  # one private temp dir for the run, removed after it
    assert Path(temp).name.startswith("fedmllm_ray_") and not Path(temp).exists()


def test_loopback_is_what_counts_as_loopback():
    assert all(map(is_loopback, ["127.0.0.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2", "fd00::2"]))


def test_a_local_ray_gets_loopback_and_a_private_temp_dir_an_address_only_attaches(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = backend_config(load_config(None, TINY), "/tmp/x")["init_args"]
    assert local == {"address": "local", "_node_ip_address": "127.0.0.1", "_temp_dir": "/tmp/x",
                     "object_store_memory": 256 * 1024 * 1024, "include_dashboard": False}
    attach = load_config(None, [*TINY, "federated.ray_address=10.0.0.5:6379"])
    assert backend_config(attach)["init_args"] == {"address": "10.0.0.5:6379"}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.6:6379")  # honoured when ray_address is empty ...
    assert backend_config(load_config(None, TINY))["init_args"] == {"address": "10.0.0.6:6379"}
    # ... and ignored with ray_address = "local"
    assert backend_config(load_config(None, [*TINY, "federated.ray_address=local"]), "/tmp/x")["init_args"] == local
    with pytest.raises(UserError, match='needs federated.backend = "ray"'):
        check_federated(load_config(None, [*TINY, "federated.backend=inprocess", "federated.ray_address=auto"]))


def test_each_ray_session_has_its_own_temp_dir_removed_also_on_failure(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(SINGLE_MACHINE_ENV, raising=False)
    cfg = load_config(None, TINY)
    seen = []
    for _ in range(2):
        with pytest.raises(RuntimeError, match="run died"):
            with ray_session(cfg) as backend:
                temp = Path(backend["init_args"]["_temp_dir"])
                seen.append(temp.parent)
                assert temp.parent.name.startswith("fedmllm_ray_") and temp.parent.stat().st_mode & 0o777 == 0o700
                assert len(str(temp)) + len("/session_2026-12-02_01-15-38_780548_4194304/sockets/plasma_store") < 108
                assert os.environ[SINGLE_MACHINE_ENV] == "0"
                raise RuntimeError("run died")
        assert not seen[-1].exists() and SINGLE_MACHINE_ENV not in os.environ
    assert seen[0] != seen[1]


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
    with ListeningSockets() as sockets:
        run = run_federated(cfg, str(tmp_path / "run"))
    assert_ray_stayed_on_loopback(sockets)
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
    import ray  # noqa: F401 - imported before the run: Ray's switch is set in this process too

    with ListeningSockets() as sockets:
        run = run_federated(cfg, str(tmp_path / "run"))
    assert_ray_stayed_on_loopback(sockets)
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
