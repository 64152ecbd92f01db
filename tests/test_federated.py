"""The federated path without Ray: our round loop, the real ClientApp, real Flower Messages.

`InProcessGrid` (server/inprocess.py) delivers each instruction to the project's ClientApp in this
process, through Flower's protobuf wire format both ways, with one persistent ``Context`` per node
(``node_config["partition-id"]`` as the simulation sets it), and turns a raising ClientApp into an
error reply as Flower's simulation worker does. `RoundLoop` runs over it through `GridTransport`,
exactly as the ServerApp does. The sequential reference (`fedmllm.federated.sequential`) and plain
`train_local` are the oracles.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Message

import clients.app as client_app
from fedmllm.config import dumps, load_config, method_options
from fedmllm.errors import UserError
from fedmllm.experiment import ExperimentData, derive_seed
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import build_algorithm
from fedmllm.federated.algorithms.scaffold import C_GLOBAL, C_LOCAL, DC
from fedmllm.federated.client import ClientStore
from fedmllm.federated.experiment import loop_settings, resolve_strategy_options
from fedmllm.federated.rounds import RoundFailed, RoundLoop, sampled_partitions
from fedmllm.federated.runtime import build_partition
from fedmllm.federated.sequential import default_runtime, initial_global_state, run_sequential_fedavg
from fedmllm.runs import write_json
from fedmllm.training.hooks import scaffold_control_update
from server.inprocess import NODE_BASE, InProcessGrid
from server.records import encode_payload
from server.strategy import GridTransport
from simulations.federated import check_federated

TOL = 1e-6
TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=2", "federated.rounds=2",
        "federated.local_steps=2", "federated.upstream_n=2", "federated.baselines=[]"]


def tiny(*overrides: str):
    return load_config(None, [*TINY, *overrides])


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((torch.as_tensor(a[k]).double() - torch.as_tensor(b[k]).double()).abs().max())
               for k in a)


def experiment_dir(cfg, root: Path) -> Path:
    """What the server writes before round 1 and clients read: config.toml, meta.json (clients
    serve federated run directories only) and partition.json."""
    from fedmllm.runs import atomic_write

    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / "config.toml", dumps(cfg))
    write_json(root / "meta.json", {"kind": "federated"})
    data = ExperimentData.load(cfg, parts=("train",))
    write_json(root / "partition.json", build_partition(cfg, data).to_json())
    return root


def ProtoGrid(num_nodes: int, node_ids=None) -> InProcessGrid:
    return InProcessGrid(client_app.app, num_nodes, node_ids)


pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


@pytest.fixture(scope="module")
def cfg():
    return tiny()


@pytest.fixture(scope="module")
def x0(cfg):
    return initial_global_state(cfg)


def run_flower(cfg, name: str, x0: dict, rounds: int, tmp_path: Path, max_failure_fraction=None,
               grid=None, evaluate=None):
    """``rounds`` rounds of strategy ``name`` in our RoundLoop over an in-process Flower grid
    (what the ServerApp runs), observed by the Instrument; returns (final state, events)."""
    from server.instrument import Instrument

    cfg = resolve_strategy_options(cfg)
    root = experiment_dir(cfg, tmp_path / f"exp-{name}")
    events: list[dict] = []
    settings = loop_settings(cfg, name, root)
    settings.rounds = rounds
    if max_failure_fraction is not None:  # server-side only: the client config stays the same
        settings.max_failure_fraction = max_failure_fraction
    algo = build_algorithm(name, cfg.strategy_options.get(name, {}), num_clients=cfg.federated.num_clients)
    loop = RoundLoop(algo, GridTransport(grid or ProtoGrid(cfg.federated.num_clients), log=events.append),
                     settings, log=events.append, metrics_size=lambda: 0,
                     observer=Instrument(name, events.append), evaluate=evaluate)
    return loop.run(dict(x0)), events


def test_one_client_fedavg_equals_centralized_training(cfg, x0):
    """1 round x K steps of FedAvg with one client = train_local on its data, same seed; 2 rounds
    = two consecutive train_local calls (fresh AdamW each), the second from the first's state."""
    from fedmllm.data.collate import encode_train
    from fedmllm.methods import apply_method
    from fedmllm.models import build_model
    from fedmllm.training.loop import loop_config, train_local

    bundle = build_model(cfg.model.name, pretrained=False, seed=cfg.seed)  # an independent build
    options, lr = method_options(cfg, "lora")
    model, method, _ = apply_method(bundle.model, "lora", options)
    assert max_diff(method.get_state(model), x0) == 0.0
    data = ExperimentData.load(cfg, parts=("train",))
    samples = build_partition(cfg, data).samples(0, data.train)
    fed1, _ = run_sequential_fedavg(cfg, rounds=1, clients=[0], initial_state=x0)
    fed2, history = run_sequential_fedavg(cfg, rounds=2, clients=[0], initial_state=x0)
    assert [h["num_examples"] for h in history] == [[len(samples)]] * 2
    states = []
    for server_round in (1, 2):
        loop = loop_config(cfg.train, lr=lr, steps=cfg.federated.local_steps, warmup_ratio=0.0,
                           schedule="constant")
        train_local(model, samples, lambda b: encode_train(bundle.processor, b), loop,
                    seed=derive_seed(cfg.seed, "client", server_round, 0))
        states.append(method.get_state(model))
    assert max_diff(fed1, states[0]) <= TOL
    assert max_diff(fed2, states[1]) <= TOL
    assert max_diff(states[0], x0) > 1e-4  # training moved the adapter


def test_clients_load_only_their_own_slice(cfg, tmp_path):
    """A client builds its samples from the saved partition alone, and they are exactly the
    samples the server-side partition gives it (same uids, same order)."""
    from fedmllm.data.partition import Partition
    from fedmllm.federated.client import load_client_samples

    root = experiment_dir(cfg, tmp_path)
    partition = Partition.from_json((root / "partition.json").read_text())
    data = ExperimentData.load(cfg, parts=("train",))
    for pid in range(cfg.federated.num_clients):
        own = load_client_samples(cfg, partition, pid)
        assert [s.uid for s in own] == [s.uid for s in partition.samples(pid, data.train)]
        assert len(own) < sum(len(v) for v in data.train.values())


def test_flower_fedavg_equals_sequential_reference(cfg, x0, tmp_path):
    """Our loop over real Messages and the real ClientApp = sequential FedAvg, for two rounds
    (unequal client sizes: the example weights matter). Both aggregate with the same float64
    weighted mean, so they agree to the bit."""
    globals_after: dict[int, dict] = {}
    flower, events = run_flower(cfg, "fedavg", x0, rounds=2, tmp_path=tmp_path,
                                evaluate=lambda r, state: globals_after.__setitem__(r, dict(state)))
    ref1, history = run_sequential_fedavg(cfg, rounds=1, initial_state=x0)
    ref2, history2 = run_sequential_fedavg(cfg, rounds=1, initial_state=globals_after[1], first_round=2)
    assert max_diff(globals_after[1], ref1) == 0.0 and max_diff(flower, ref2) == 0.0
    full, _ = run_sequential_fedavg(cfg, rounds=2, initial_state=x0)
    assert max_diff(flower, full) == 0.0
    assert max_diff(flower, globals_after[1]) > 1e-4 and max_diff(globals_after[1], x0) > 1e-4
    sizes = history[0]["num_examples"]
    assert sizes[0] != sizes[1] and sum(sizes) == 6 * 8  # unequal weights, all samples held
    trains = [e for e in events if e["event"] == "client_train"]
    assert [(e["round"], e["client"]) for e in trains] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [e["examples"] for e in trains[:2]] == history[0]["num_examples"]
    assert [e["train_loss"] for e in trains] == pytest.approx(
        [v for h in history + history2 for v in h["train_loss"]], abs=1e-6)
    rounds = [e for e in events if e["event"] == "round"]
    assert [(e["round"], e["clients"], e["failed"]) for e in rounds] == [(1, 2, 0), (2, 2, 0)]
    assert rounds[0]["drift"]["clients"] == [0, 1] and rounds[0]["drift"]["all.b_local"] >= 1.0


def scaffold_message(cfg, root: Path, x: dict, c_global: dict, server_round: int, node: int) -> Message:
    """A SCAFFOLD train instruction as the loop sends it (payload of the algorithm + round config)."""
    settings = loop_settings(cfg, "scaffold", root)
    algo = build_algorithm("scaffold", {"control": "option2"}, num_clients=cfg.federated.num_clients)
    algo.init(x)
    algo.c_global = {k: np.asarray(v, dtype=np.float32) for k, v in c_global.items()}
    payload = algo.configure(server_round, 0, {k: np.asarray(v) for k, v in x.items()})
    payload.config.update({**settings.common_config, P.SERVER_ROUND: server_round, P.LR: settings.lr(server_round),
                           P.LOCAL_STEPS: settings.local_steps, P.ALGORITHM: "scaffold", P.SYSTEM: "scaffold"})
    return Message(encode_payload(payload), node, "train")


def test_scaffold_client_keeps_c_local_and_replies_option_ii_dc(cfg, x0, tmp_path):
    from fedmllm.federated.algorithms import GLOBAL, Payload

    root = experiment_dir(resolve_strategy_options(cfg), tmp_path)
    grid = ProtoGrid(2)
    node, pid = NODE_BASE + 1, 1
    store = ClientStore(root / "clients")
    _, lr = method_options(cfg, cfg.federated.method)
    steps = cfg.federated.local_steps
    zeros = {k: np.zeros_like(v) for k, v in x0.items()}
    as_t = lambda d: {k: torch.as_tensor(v) for k, v in d.items()}  # noqa: E731
    # Round 1: c = c_i = 0, so c_1+ = (x - y) / (K lr) and dc = c_1+.
    reply = grid.deliver(scaffold_message(cfg, root, x0, zeros, 1, node))
    y1 = {k: a.numpy() for k, a in reply.content["state"].items()}
    c1 = store.load("scaffold", pid, 2)[C_LOCAL]
    assert max_diff(c1, scaffold_control_update(as_t(zeros), as_t(zeros), as_t(x0), as_t(y1), steps, lr)) <= TOL
    assert max_diff({k: a.numpy() for k, a in reply.content[DC].items()}, c1) <= TOL
    assert max_diff(c1, zeros) > 1e-3
    # Round 2 from a new x with a non-zero c: the client must read c_i = c_1+ from its store.
    g = torch.Generator().manual_seed(0)
    c_global = {k: (0.01 * torch.randn(v.shape, generator=g)).numpy() for k, v in x0.items()}
    x1 = {k: v + 0.001 for k, v in y1.items()}
    reply = grid.deliver(scaffold_message(cfg, root, x1, c_global, 2, node))
    y2 = {k: a.numpy() for k, a in reply.content["state"].items()}
    c2 = store.load("scaffold", pid, 3)[C_LOCAL]
    assert max_diff(c2, scaffold_control_update(as_t(c1), as_t(c_global), as_t(x1), as_t(y2), steps, lr)) <= TOL
    assert max_diff({k: a.numpy() for k, a in reply.content[DC].items()}, {k: c2[k] - c1[k] for k in c1}) <= TOL
    # The correction c - c_i entered training: y2 is what training with (c, c_1+) gives ...
    rt = default_runtime(cfg)
    config = {P.SERVER_ROUND: 2, P.LR: lr, P.LOCAL_STEPS: steps, P.ALGORITHM: "scaffold", "scaffold-control": "option2"}
    direct = rt.run_round(pid, Payload({GLOBAL: x1, C_GLOBAL: c_global}, config), {C_LOCAL: c1})
    assert max_diff(y2, direct.arrays["state"]) <= TOL
    # ... and not what plain training gives.
    plain = rt.run_round(pid, Payload({GLOBAL: x1}, {**config, P.ALGORITHM: "fedavg"}), {})
    assert max_diff(y2, plain.arrays["state"]) > 1e-5
    # Controls are per client: the client that never trained has none.
    assert store.load("scaffold", 0, 3) == {}


def test_one_failing_client_round_completes_with_the_others(x0, tmp_path):
    cfg = tiny("federated.fail_clients=[1]")
    final, events = run_flower(cfg, "fedavg", x0, rounds=1, tmp_path=tmp_path, max_failure_fraction=0.5)
    failed = [e for e in events if e["event"] == "client_failed"]
    assert len(failed) == 1 and failed[0]["client"] == 1
    assert "injected failure of client 1" in failed[0]["error"]
    rnd = next(e for e in events if e["event"] == "round")
    assert (rnd["clients"], rnd["failed"]) == (1, 1)
    alone, _ = run_sequential_fedavg(cfg, rounds=1, clients=[0], initial_state=x0)
    assert max_diff(final, alone) <= TOL  # the average of the one surviving client
    with pytest.raises(RoundFailed, match="1 of 2 clients failed"):
        run_flower(cfg, "fedavg", x0, rounds=1, tmp_path=tmp_path / "b", max_failure_fraction=0.4)


# --- bad input: one-line UserErrors before any compute ------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["federated.alpha=0"], "federated.alpha' must be > 0"),
    (["federated.alpha=-1"], "federated.alpha' must be > 0"),
    (["federated.clients_per_round=3"], "clients_per_round (3) exceeds federated.num_clients (2)"),
])
def test_bad_config_values(overrides, message):
    with pytest.raises(UserError) as e:
        tiny(*overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides, message", [
    (['federated.strategies=["fedavg", "nope"]'], "unknown strategy 'nope'"),
    (["federated.fail_clients=[2]"], "fail_clients [2] are not partition ids 0..1"),
    (["federated.fail_clients=[-1]"], "fail_clients [-1] are not partition ids 0..1"),
    (["federated.strategies=[]"], "federated.strategies is empty"),
])
def test_check_federated_rejects(overrides, message):
    with pytest.raises(UserError) as e:
        check_federated(tiny(*overrides))
    assert message in str(e.value) and "\n" not in str(e.value)
    if "unknown strategy" in message:
        assert "fedavg" in str(e.value) and "scaffold" in str(e.value)  # names the valid ones


def test_non_averageable_method_needs_a_selecting_strategy(monkeypatch):
    """No registered method is non-averageable today (AdaLoRA is not registered), so the check
    runs with LoRA's flag flipped: averaging strategies refuse, Krum (selection) is accepted."""
    from fedmllm.methods import METHODS

    monkeypatch.setattr(METHODS.get("lora"), "averageable", False)
    with pytest.raises(UserError, match="strategy 'fedavg' cannot aggregate the state of method 'lora'"):
        check_federated(tiny('federated.strategies=["krum", "fedavg"]', "federated.num_clients=3"))
    check_federated(tiny('federated.strategies=["krum"]', "federated.num_clients=3"))  # Krum: n >= 2f + 3


def test_cli_prints_one_line_and_exits_2(tmp_path):
    """Both layers (config validation, federated checks) through the console script."""
    exe = Path(sys.executable).with_name("fedmllm")
    cases = {"alpha": ["federated.alpha=0"], "strategy": ['federated.strategies=["nope"]']}
    procs = {k: subprocess.Popen([str(exe), "federated", "--out", str(tmp_path / k), *TINY, *v],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, v in cases.items()}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert err.count("\n") == 1 and err.startswith("fedmllm federated: error: ")
        assert "Traceback" not in err + out
        assert not (tmp_path / key).exists()  # nothing created: rejected before any work


def test_every_system_starts_from_the_same_initial_state(cfg, x0):
    """Regression: ServerRuntime.initial_state used to read the live model, which evaluating a
    system overwrites, so each strategy/baseline started from the previous system's result."""
    from fedmllm.federated.runtime import ServerRuntime

    server = ServerRuntime(cfg, ExperimentData())
    assert max_diff(server.initial_state(), x0) == 0.0
    server.evaluate({k: v + 1.0 for k, v in x0.items()}, upstream=None)
    assert max_diff(server.initial_state(), x0) == 0.0


def test_client_sampling_depends_on_the_seed_not_on_node_ids(x0, tmp_path):
    """Regression: Flower samples from the set of node ids, which are random in every simulation,
    so the same seed trained different partitions in every run. Two grids listing their nodes in
    opposite partition orders must now train the same partitions, those of the reference."""
    cfg = tiny("seed=2", "federated.num_clients=3", "federated.clients_per_round=1", "federated.rounds=3")
    expected = [(r, c) for r in (1, 2, 3) for c in sampled_partitions(2, 3, 1, r)]
    assert len({c for _, c in expected}) > 1  # the sample changes between rounds
    runs = []
    for i, node_ids in enumerate(([7000, 7001, 7002], [7102, 7101, 7100])):
        final, events = run_flower(cfg, "fedavg", x0, rounds=3, tmp_path=tmp_path / str(i),
                                   grid=ProtoGrid(3, node_ids))
        assert [(e["round"], e["client"]) for e in events if e["event"] == "client_train"] == expected
        (asked,) = [e for e in events if e["event"] == "node_partitions"]  # asked once, round 1
        assert (asked["asked"], asked["known"]) == (3, 3)
        runs.append(final)
    reference, history = run_sequential_fedavg(cfg, initial_state=x0)
    assert [(h["round"], c) for h in history for c in h["clients"]] == expected
    assert max_diff(runs[0], runs[1]) == 0.0 and max_diff(runs[0], reference) <= TOL


def test_personalized_scores_from_the_server_answers_equal_the_clients_own():
    """A client whose own model is the global state is scored on its split from the server's
    answers of that state (`ServerRuntime.split_scores`): the same scores the client computes
    (`ClientRuntime.evaluate_round`, what the evaluate message runs), for every client."""
    from fedmllm.federated.client import ClientRuntime
    from fedmllm.federated.experiment import carries_state
    from fedmllm.federated.personal import split_for_clients
    from fedmllm.federated.rounds import round_payloads
    from fedmllm.federated.runtime import ServerRuntime

    cfg = tiny("data.test_n=8", "federated.num_clients=3", "model.pretrained=true")  # non-trivial answers
    data = ExperimentData.load(cfg)
    partition = build_partition(cfg, data)
    tests = split_for_clients(partition, data.test)
    server = ServerRuntime(cfg, data)
    clients = ClientRuntime(cfg, partition, pools=data.train, test_partition=tests, test_pools=data.test)
    rng = np.random.default_rng(0)
    state = {k: v + rng.normal(0, 0.05, v.shape).astype(v.dtype) for k, v in server.initial_state().items()}
    algo = build_algorithm("fedavg", num_clients=3)
    payloads = round_payloads(algo, 2, state, range(3), {P.SERVER_ROUND: 1, P.ALGORITHM: "fedavg"})
    assert server.split_scores(state, clients.client_tests(0)) is None  # nothing evaluated yet
    server.evaluate(state, upstream=None)
    nonzero = 0
    for pid, payload in payloads.items():
        assert carries_state(payload, state)
        scores = server.split_scores(state, clients.client_tests(pid))
        assert scores == clients.evaluate_round(pid, payload, {})
        nonzero += sum(v > 0 for v in scores[0].values())
    assert nonzero >= 3  # the shipped model answers some right: the comparison is not of zeros
    other = {**state, next(iter(state)): state[next(iter(state))] * 0}
    assert server.split_scores(other, clients.client_tests(0)) is None and not carries_state(payloads[0], other)


def test_fast_dispatch_wakes_on_stored_instructions_and_restores_flower():
    """`simulations.dispatch`: the engine hands every node's instruction over as soon as it is
    stored (no 0.1 s poll), does not poll while nothing is stored (Flower's 0.1 s as the longest
    sleep), and Flower's loop comes back after."""
    import threading
    import time
    from queue import Queue

    from flwr.server.superlink.fleet.vce import vce_api

    from simulations.dispatch import add_messages_to_queue, fast_dispatch, poll_wait

    assert [round(poll_wait(s), 6) for s in (0.0001, 0.005, 1.0)] == [0.0009, 0.045, 0.1]
    original = vce_api.add_messages_to_queue
    with fast_dispatch():
        assert vce_api.add_messages_to_queue is add_messages_to_queue
    assert vce_api.add_messages_to_queue is original

    class State:  # instructions per node, handed over once
        def __init__(self):
            self.pending, self.polls = {7: ["a"], 8: ["b"]}, 0

        def store_message_ins(self, node_id, msg):
            self.pending[node_id].append(msg)

        def get_message_ins(self, node_id, limit):
            self.polls += 1
            out, self.pending[node_id] = self.pending[node_id][:limit], self.pending[node_id][limit:]
            return out

    state, queue, stop = State(), Queue(), threading.Event()
    thread = threading.Thread(target=add_messages_to_queue, args=(state, queue, {7: 0, 8: 1}, stop))
    thread.start()
    try:
        got = sorted(queue.get(timeout=5) for _ in range(2))
        time.sleep(0.1)  # the loop is asleep now
        polls = state.polls
        time.sleep(0.5)
        idle = state.polls - polls  # Flower's 0.1 s: <= ~6 wake-ups of 2 polls (a 0.01 s poll: ~100)
        t0 = time.perf_counter()
        state.store_message_ins(8, "c")  # what the grid calls: the instruction is stored
        late = queue.get(timeout=5)
        handed_after = time.perf_counter() - t0
    finally:
        stop.set()
        thread.join(timeout=5)
    assert got == ["a", "b"] and late == "c" and not thread.is_alive()
    assert idle <= 14, idle
    assert handed_after < 0.05, handed_after


def test_the_grid_sleeps_until_a_reply_is_stored():
    """`server.wakeup.wake_on_replies`: the in-memory grid's reply loop sleeps until the
    LinkState stores a reply (not a 0.01 s poll), 0.1 s at most; other grids are left alone."""
    import threading
    import time

    from server.wakeup import wake_on_replies

    class State:
        def __init__(self):
            self.replies = []

        def store_message_res(self, msg):
            self.replies.append(msg)

    class Grid:  # the two attributes and the pull InMemoryGrid has
        def __init__(self):
            self.state, self.pull_interval, self.pulls = State(), 0.1, 0

        def pull_messages(self, ids):
            self.pulls += 1
            out, self.state.replies = [m for m in self.state.replies if m in ids], []
            return out

    grid = Grid()
    wake_on_replies(grid, 0.1)
    assert grid.pull_interval == 0.0
    t0 = time.perf_counter()
    assert grid.pull_messages(["r"]) == [] and 0.08 < time.perf_counter() - t0 < 1.0  # nothing: waits
    threading.Timer(0.05, grid.state.store_message_res, args=("r",)).start()
    t0, got = time.perf_counter(), []
    while not got:
        got = list(grid.pull_messages(["r"]))
    assert got == ["r"] and time.perf_counter() - t0 < 0.09 and grid.pulls <= 4
    other = type("HttpGrid", (), {"pull_interval": 3.0})()
    wake_on_replies(other, 0.1)
    assert other.pull_interval == 3.0
