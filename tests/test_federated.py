"""The federated path without Ray: real ClientApp, real strategies, real Flower Messages.

`ProtoGrid` is a Flower ``Grid`` that delivers each instruction to the project's ClientApp in this
process, through Flower's protobuf wire format both ways, with one persistent ``Context`` per node
(``node_config["partition-id"]`` as the simulation sets it), and turns a raising ClientApp into an
error reply as Flower's simulation worker does. `Strategy.start` runs its real round loop over it.
The sequential reference (`fedmllm.federated.sequential`) and plain `train_local` are the oracles.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterable

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

import clients.app as client_app
from fedmllm.config import dumps, load_config, method_options
from fedmllm.errors import UserError
from fedmllm.experiment import ExperimentData, derive_seed
from fedmllm.federated import protocol as P
from fedmllm.federated.runtime import build_partition, client_runtime
from fedmllm.federated.sequential import (
    initial_global_state, run_sequential_fedavg, sampled_partitions)
from fedmllm.training.hooks import scaffold_control_update
from server.instrument import RoundFailed
from server.orchestrate import build_instrumented
from simulations.federated import check_federated

TOL = 1e-6
TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=2", "federated.rounds=2",
        "federated.local_steps=2", "federated.upstream_n=2", "federated.baselines=[]"]
NODE_BASE = 7000  # node ids differ from partition ids: clients must use partition-id


def tiny(*overrides: str):
    return load_config(None, [*TINY, *overrides])


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((torch.as_tensor(a[k]).double() - torch.as_tensor(b[k]).double()).abs().max())
               for k in a)


class ProtoGrid(Grid):
    """Delivers instructions to the ClientApp in-process, serialized as on the wire."""

    def __init__(self, num_nodes: int, node_ids=None):
        node_ids = node_ids or [NODE_BASE + pid for pid in range(num_nodes)]
        self.contexts = {nid: Context(run_id=1, node_id=nid,
                                      node_config={"partition-id": pid, "num-partitions": num_nodes},
                                      state=RecordDict(), run_config={})
                         for pid, nid in enumerate(node_ids)}
        self._replies: list[Message] = []
        self._count = 0

    def set_run(self, run):  # noqa: D102
        pass

    @property
    def run(self):  # noqa: D102
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: D102
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return set(self.contexts)  # as flwr's InMemoryGrid: a set, in no partition order

    def deliver(self, msg: Message) -> Message:
        """One instruction through the wire format to the ClientApp and its reply back."""
        self._count += 1
        msg.metadata.__dict__["_message_id"] = f"m{self._count}"
        received = message_from_proto(message_to_proto(msg))
        try:
            reply = client_app.app(received, self.contexts[received.metadata.dst_node_id])
        except Exception as e:  # noqa: BLE001 - what flwr's vce worker does with a raising app
            reason = str(type(e)) + ":<'" + str(e) + "'>"  # flwr's vce_api.worker format
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                            reply_to=received)
        return message_from_proto(message_to_proto(reply))

    def push_messages(self, messages):  # noqa: D102
        self._replies += [self.deliver(m) for m in messages]
        return [str(i) for i in range(len(self._replies))]

    def pull_messages(self, message_ids):  # noqa: D102
        out, self._replies = self._replies, []
        return out

    def send_and_receive(self, messages, *, timeout=None):  # noqa: D102
        self.push_messages(messages)
        return self.pull_messages([])


@pytest.fixture(autouse=True)
def task_identity():
    """Instruction messages take run/node/task ids from TaskIdentity, as in a ServerApp."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture(scope="module")
def cfg():
    return tiny()


@pytest.fixture(scope="module")
def x0(cfg):
    return initial_global_state(cfg)


def run_flower(cfg, name: str, x0: dict, rounds: int, max_failure_fraction=None, grid=None,
               evaluate_fn=None):
    """``rounds`` rounds of strategy ``name`` (inside Instrumented) over a ProtoGrid."""
    events: list[dict] = []
    strategy = build_instrumented(cfg, name, events.append)
    if max_failure_fraction is not None:  # server-side only: the client config stays the same
        strategy.max_failure_fraction = max_failure_fraction
    result = strategy.start(grid=grid or ProtoGrid(cfg.federated.num_clients),
                            initial_arrays=ArrayRecord(x0), num_rounds=rounds,
                            train_config=ConfigRecord({P.SYSTEM: name}), evaluate_fn=evaluate_fn)
    return result.arrays.to_torch_state_dict(), events


def test_one_client_fedavg_equals_centralized_training(cfg, x0):
    """1 round x K steps of FedAvg with one client = train_local on its data, same seed; 2 rounds
    = two consecutive train_local calls (fresh AdamW each), the second from the first's state."""
    from fedmllm.data.collate import encode_train
    from fedmllm.methods import apply_method
    from fedmllm.models import build_model
    from fedmllm.pretrain import loop_config
    from fedmllm.training.loop import train_local

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


def test_flower_fedavg_equals_sequential_reference(cfg, x0):
    """Instrumented(FedAvg).start over real Messages and the real ClientApp = sequential FedAvg,
    round by round (unequal client sizes: the example weights matter). Flower sums in float32,
    the reference in float64; AdamW magnifies that last-bit difference up to lr/eps = 1e5 times
    in round 2 (near-zero gradients), so round 2 is checked from Flower's own round-1 state.
    Bit-identical multi-round runs are checked where the sums are exact (Ray test: equal sizes;
    sampling test: one client per round)."""
    globals_after: dict[int, dict] = {}
    flower, events = run_flower(cfg, "fedavg", x0, rounds=2, evaluate_fn=lambda r, arrays: (
        globals_after.__setitem__(r, arrays.to_torch_state_dict())))
    ref1, history = run_sequential_fedavg(cfg, rounds=1, initial_state=x0)
    ref2, history2 = run_sequential_fedavg(cfg, rounds=1, initial_state=globals_after[1], first_round=2)
    assert max_diff(globals_after[1], ref1) <= TOL and max_diff(flower, ref2) <= TOL
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


def scaffold_message(cfg, x: dict, c_global: dict, server_round: int, node: int) -> Message:
    _, lr = method_options(cfg, cfg.federated.method)
    config = ConfigRecord({P.SERVER_ROUND: server_round, P.LR: lr, P.RUN_CONFIG: dumps(cfg),
                           P.LOCAL_STEPS: cfg.federated.local_steps})
    content = RecordDict({P.ARRAYS: ArrayRecord(x), P.CONFIG: config,
                          P.SCAFFOLD_C_GLOBAL: ArrayRecord(c_global)})
    return Message(content, node, "train")


def test_scaffold_client_keeps_c_local_and_replies_option_ii_dc(cfg, x0):
    grid = ProtoGrid(2)
    node, pid = NODE_BASE + 1, 1
    context = grid.contexts[node]
    _, lr = method_options(cfg, cfg.federated.method)
    steps = cfg.federated.local_steps
    zeros = {k: torch.zeros_like(v) for k, v in x0.items()}
    # Round 1: c = c_i = 0, so c_1+ = (x - y) / (K lr) and dc = c_1+.
    reply = grid.deliver(scaffold_message(cfg, x0, zeros, 1, node))
    y1 = reply.content[P.ARRAYS].to_torch_state_dict()
    c1 = context.state[client_app.SCAFFOLD_C_LOCAL].to_torch_state_dict()
    assert max_diff(c1, scaffold_control_update(zeros, zeros, x0, y1, steps, lr)) <= TOL
    assert max_diff(reply.content[P.SCAFFOLD_DC].to_torch_state_dict(), c1) <= TOL
    assert max_diff(c1, zeros) > 1e-3
    # Round 2 from a new x with a non-zero c: the client must read c_i = c_1+ from its context.
    g = torch.Generator().manual_seed(0)
    c_global = {k: 0.01 * torch.randn(v.shape, generator=g) for k, v in x0.items()}
    x1 = {k: v + 0.001 for k, v in y1.items()}
    reply = grid.deliver(scaffold_message(cfg, x1, c_global, 2, node))
    y2 = reply.content[P.ARRAYS].to_torch_state_dict()
    c2 = context.state[client_app.SCAFFOLD_C_LOCAL].to_torch_state_dict()
    assert max_diff(c2, scaffold_control_update(c1, c_global, x1, y2, steps, lr)) <= TOL
    assert max_diff(reply.content[P.SCAFFOLD_DC].to_torch_state_dict(),
                    {k: c2[k] - c1[k] for k in c1}) <= TOL
    # The correction c - c_i entered training: y2 is what training with (c, c_1+) gives ...
    rt = client_runtime(dumps(cfg))
    direct = rt.train(pid, x1, 2, lr=lr, steps=steps, control=(c_global, c1))
    assert max_diff(y2, direct.state) <= TOL
    # ... and not what plain training gives.
    assert max_diff(y2, rt.train(pid, x1, 2, lr=lr, steps=steps).state) > 1e-5
    # Controls are per node: the node that never trained has none.
    assert client_app.SCAFFOLD_C_LOCAL not in grid.contexts[NODE_BASE].state


def test_one_failing_client_round_completes_with_the_others(x0):
    cfg = tiny("federated.fail_clients=[1]")
    final, events = run_flower(cfg, "fedavg", x0, rounds=1, max_failure_fraction=0.5)
    failed = [e for e in events if e["event"] == "client_failed"]
    assert len(failed) == 1 and failed[0]["node"] == NODE_BASE + 1
    assert "injected failure of client 1" in failed[0]["error"]
    rnd = next(e for e in events if e["event"] == "round")
    assert (rnd["clients"], rnd["failed"]) == (1, 1)
    alone, _ = run_sequential_fedavg(cfg, rounds=1, clients=[0], initial_state=x0)
    assert max_diff(final, alone) <= TOL  # the average of the one surviving client
    with pytest.raises(RoundFailed, match="1 of 2 clients failed"):
        run_flower(cfg, "fedavg", x0, rounds=1, max_failure_fraction=0.4)


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
        check_federated(tiny('federated.strategies=["krum", "fedavg"]'))
    check_federated(tiny('federated.strategies=["krum"]'))


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


def test_client_sampling_depends_on_the_seed_not_on_node_ids(x0):
    """Regression: Flower samples from the set of node ids, which are random in every simulation,
    so the same seed trained different partitions in every run. Two grids listing their nodes in
    opposite partition orders must now train the same partitions, those of the reference."""
    cfg = tiny("seed=2", "federated.num_clients=3", "federated.clients_per_round=1", "federated.rounds=3")
    expected = [(r, c) for r in (1, 2, 3) for c in sampled_partitions(cfg, r)]
    assert len({c for _, c in expected}) > 1  # the sample changes between rounds
    runs = []
    for node_ids in ([7000, 7001, 7002], [7102, 7101, 7100]):
        final, events = run_flower(cfg, "fedavg", x0, rounds=3, grid=ProtoGrid(3, node_ids))
        assert [(e["round"], e["client"]) for e in events if e["event"] == "client_train"] == expected
        (asked,) = [e for e in events if e["event"] == "node_partitions"]  # asked once, round 1
        assert (asked["asked"], asked["known"]) == (3, 3)
        runs.append(final)
    reference, history = run_sequential_fedavg(cfg, initial_state=x0)
    assert [(h["round"], c) for h in history for c in h["clients"]] == expected
    assert max_diff(runs[0], runs[1]) == 0.0 and max_diff(runs[0], reference) <= TOL
