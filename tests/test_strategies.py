"""Strategies on real Flower Messages: configure_train -> client replies -> aggregate_train.

`LoopbackGrid` is a Flower ``Grid`` that delivers each message to an in-process client function
and returns its reply (no SuperLink, no Ray), so `Strategy.start` runs its real round loop.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pytest
from flwr.app import (
    Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdagrad as FlwrFedAdagrad
from flwr.serverapp.strategy import FedAdam as FlwrFedAdam
from flwr.serverapp.strategy import FedYogi as FlwrFedYogi
from flwr.supercore.task_identity import TaskIdentity

from fedmllm.errors import UserError
from fedmllm.federated import aggregate as A
from fedmllm.federated import protocol as P
from server.strategies import STRATEGIES, build_strategy

Client = Callable[[Message], Message]


class LoopbackGrid(Grid):
    """Delivers messages to in-process client functions keyed by node id."""

    def __init__(self, clients: dict[int, Client]):
        self.clients = clients
        self._replies: list[Message] = []

    def set_run(self, run):  # noqa: D102
        pass

    @property
    def run(self):  # noqa: D102
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: D102
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.clients)

    def push_messages(self, messages):  # noqa: D102
        self._replies += [self.clients[m.metadata.dst_node_id](m) for m in messages]
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


def rec(**arrays) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()})


def np_of(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


def metrics(pid: int, n: int, loss: float = 1.0, failed: int = 0) -> MetricRecord:
    return MetricRecord({P.NUM_EXAMPLES: n, P.TRAIN_LOSS: loss, P.PARTITION_ID: pid,
                         P.CLIENT_FAILED: failed, P.BYTES_IN: 100, P.BYTES_OUT: 10,
                         P.SECONDS: 0.5 + pid})


def shift_client(pid: int, n: int, delta: float, scaffold_lr: float = 0.1, steps: int = 2):
    """A deterministic 'trainer': y = x + delta * (pid + 1) per key; evaluates a fixed score.
    Under SCAFFOLD it keeps c_i across rounds (like context.state) and replies dc_i."""
    state: dict[str, dict[str, np.ndarray]] = {}

    def handle(msg: Message) -> Message:
        x = np_of(msg.content[P.ARRAYS])
        if msg.metadata.message_type == MessageType.EVALUATE:
            out = RecordDict({P.METRICS: MetricRecord({P.NUM_EXAMPLES: n, "accuracy": pid / 10,
                                                       P.PARTITION_ID: pid})})
            return Message(out, reply_to=msg)
        y = {k: v + delta * (pid + 1) for k, v in x.items()}
        out = RecordDict({P.ARRAYS: rec(**y), P.METRICS: metrics(pid, n, loss=float(pid))})
        if P.SCAFFOLD_C_GLOBAL in msg.content:
            c = np_of(msg.content[P.SCAFFOLD_C_GLOBAL])
            ci = state.get("c_i", {k: np.zeros_like(v) for k, v in c.items()})
            state["c_i"], dc = A.scaffold_client_control(ci, c, x, y, steps, scaffold_lr)
            out[P.SCAFFOLD_DC] = rec(**dc)
        return Message(out, reply_to=msg)

    handle.state = state  # type: ignore[attr-defined]
    return handle


def grid_of(*specs) -> LoopbackGrid:
    """specs: (n_examples, delta) per client; node ids 101.. so they differ from partition ids."""
    return LoopbackGrid({101 + pid: shift_client(pid, n, d) for pid, (n, d) in enumerate(specs)})


def one_round(strategy, grid: LoopbackGrid, x: ArrayRecord, server_round: int = 1):
    messages = list(strategy.configure_train(server_round, x, ConfigRecord(), grid))
    replies = grid.send_and_receive(messages)
    return messages, replies, strategy.aggregate_train(server_round, replies[::-1])


def test_fedavg_hand_values_and_metric_reduction():
    s = build_strategy("fedavg", min_available_nodes=2, min_train_nodes=2)
    grid = grid_of((1, 1.0), (3, 2.0))  # y = x + 1 (n=1), y = x + 4 (n=3)
    _, _, (arrays, m) = one_round(s, grid, rec(w=[0.0, 1.0]))
    # 0.25*[1, 2] + 0.75*[4, 5] = [3.25, 4.25]
    np.testing.assert_allclose(np_of(arrays)["w"], [3.25, 4.25])
    assert m[P.TRAIN_LOSS] == pytest.approx(0.75)  # 0.25*0 + 0.75*1
    assert m[P.NUM_EXAMPLES] == 4 and m[P.BYTES_IN] == 200 and m[P.SECONDS] == 1.5
    assert P.PARTITION_ID not in m and m[P.NUM_CLIENTS] == 2 and m[P.CLIENT_FAILED] == 0


def test_failed_clients_are_left_out_and_observer_sees_partition_order():
    seen = []
    s = build_strategy("fedavg", min_available_nodes=3, min_train_nodes=3,
                       train_observer=lambda r, g, replies: seen.append((r, g, replies)))
    grid = grid_of((1, 1.0), (1, 1.0), (1, 1.0))
    messages = list(s.configure_train(1, rec(w=[0.0]), ConfigRecord(), grid))
    replies = grid.send_and_receive(messages)
    bad = next(m for m in replies if m.content[P.METRICS][P.PARTITION_ID] == 1)
    bad.content[P.METRICS][P.CLIENT_FAILED] = 1
    replies = sorted(replies, key=lambda r: -r.content[P.METRICS][P.PARTITION_ID])  # 2, 1, 0
    arrays, m = s.aggregate_train(1, replies)
    np.testing.assert_allclose(np_of(arrays)["w"], [2.0])  # mean of 1 and 3; client 1 left out
    assert m[P.NUM_CLIENTS] == 2 and m[P.CLIENT_FAILED] == 1
    (rnd, before, views), = seen
    assert rnd == 1 and before["w"].tolist() == [0.0]
    assert [v.partition_id for v in views] == [0, 2, 1] and [v.failed for v in views] == [0, 0, 1]
    np.testing.assert_allclose(views[1].arrays["w"], [3.0])


def test_mismatched_reply_is_rejected():
    s = build_strategy("fedavg", min_available_nodes=1, min_train_nodes=1)
    grid = grid_of((1, 1.0))
    messages = list(s.configure_train(1, rec(w=[0.0, 0.0]), ConfigRecord(), grid))
    reply = Message(RecordDict({P.ARRAYS: rec(w=[1.0]), P.METRICS: metrics(0, 1)}),
                    reply_to=messages[0])
    with pytest.raises(P.ReplyError, match=r"w: got \(1,\), expected \(2,\)"):
        s.aggregate_train(1, [reply])


def test_fedprox_configure_train_carries_proximal_mu():
    s = build_strategy("fedprox", {"proximal_mu": 0.05}, min_available_nodes=2,
                       min_train_nodes=2)
    messages = list(s.configure_train(3, rec(w=[0.0]), ConfigRecord({P.LR: 0.1}),
                                      grid_of((1, 1.0), (1, 1.0))))
    assert len(messages) == 2
    for msg in messages:
        cfg = msg.content[P.CONFIG]
        assert cfg[P.PROXIMAL_MU] == 0.05 and cfg[P.SERVER_ROUND] == 3 and cfg[P.LR] == 0.1


def test_fedavgm_matches_hsu_update_over_three_rounds():
    s = build_strategy("fedavgm", {"server_learning_rate": 0.5, "server_momentum": 0.9},
                       min_available_nodes=2, min_train_nodes=2, fraction_evaluate=0.0)
    grid = grid_of((2, -3.0), (2, 0.5))  # y = x - 3 and y = x + 1: average update -1
    x, v, arrays = {"w": np.array([1.0])}, None, rec(w=[1.0])
    for rnd in (1, 2, 3):
        _, _, (arrays, _) = one_round(s, grid, arrays, rnd)
        x, v = A.fedavgm(x, {"w": x["w"] - 1.0}, v, server_lr=0.5, server_momentum=0.9)
        np.testing.assert_allclose(np_of(arrays)["w"], x["w"], rtol=1e-12)
    # by hand: g = 1 each round; v = 1, 1.9, 2.71; x = 1 - 0.5*(1 + 1.9 + 2.71) = -1.805
    np.testing.assert_allclose(np_of(arrays)["w"], [-1.805])


@pytest.mark.parametrize("name", ["fedadagrad", "fedadam", "fedyogi"])
def test_reddi_strategies_follow_algorithm_2(name):
    hp = {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    s = build_strategy(name, hp, min_available_nodes=2, min_train_nodes=2)
    grid = grid_of((1, 0.2), (3, -0.1))  # updates +0.2 (n=1), -0.2 (n=3): weighted -0.1
    arrays, x, m, v = rec(w=[0.5, -0.5]), {"w": np.array([0.5, -0.5])}, None, None
    for rnd in (1, 2, 3):
        _, _, (arrays, _) = one_round(s, grid, arrays, rnd)
        x, m, v = A.fedopt(name[3:], x, {"w": x["w"] - 0.1}, m, v, **hp)
        np.testing.assert_allclose(np_of(arrays)["w"], x["w"], rtol=1e-12)


@pytest.mark.parametrize("name,flwr_cls",
                         [("fedadagrad", FlwrFedAdagrad), ("fedyogi", FlwrFedYogi)])
def test_flower_adagrad_yogi_equal_ours_with_zero_v_init(name, flwr_cls):
    hp = {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    if name == "fedadagrad":  # Flower's FedAdagrad fixes beta_1 = 0 and has no beta_2
        hp = {"eta": 0.1, "tau": 1e-3}
    ours = build_strategy(name, {**hp, "v_init": 0.0}, min_available_nodes=2)
    flwr = flwr_cls(**hp, min_available_nodes=2)
    a = b = rec(w=[0.5, -0.5])
    for rnd in (1, 2, 3):
        _, _, (a, _) = one_round(ours, grid_of((1, 0.2), (3, -0.1)), a, rnd)
        _, _, (b, _) = one_round(flwr, grid_of((1, 0.2), (3, -0.1)), b, rnd)
        np.testing.assert_allclose(np_of(a)["w"], np_of(b)["w"], rtol=1e-12)


def test_flower_fedadam_differs_by_bias_correction():
    hp = {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    ours = build_strategy("fedadam", {**hp, "v_init": 0.0}, min_available_nodes=2)
    flwr = FlwrFedAdam(**hp, min_available_nodes=2)
    x0 = rec(w=[0.5])
    _, _, (a, _) = one_round(ours, grid_of((1, 0.2), (3, -0.1)), x0)
    _, _, (b, _) = one_round(flwr, grid_of((1, 0.2), (3, -0.1)), x0)
    # Flower scales the step by sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) with t = server_round = 1
    factor = np.sqrt(1 - 0.99 ** 2) / (1 - 0.9 ** 2)
    step_ours, step_flwr = np_of(a)["w"][0] - 0.5, np_of(b)["w"][0] - 0.5
    assert step_flwr / step_ours == pytest.approx(factor, rel=1e-9)
    assert abs(factor - 1) > 0.2


def test_scaffold_round_trip_of_control_variates():
    s = build_strategy("scaffold", {"server_lr": 1.0}, min_available_nodes=3, min_train_nodes=3)
    grid = grid_of((1, 0.1), (2, -0.2), (5, 0.05))
    x, arrays = {"w": np.array([1.0, 2.0])}, rec(w=[1.0, 2.0])
    for rnd in (1, 2, 3):
        messages, _, (arrays, m) = one_round(s, grid, arrays, rnd)
        for msg in messages:  # c travels as a second ArrayRecord, same keys/shapes as x
            assert set(msg.content.array_records) == {P.ARRAYS, P.SCAFFOLD_C_GLOBAL}
        # hand: y_i - x = 0.1, -0.4, 0.15; weighted (1, 2, 5)/8 mean = (0.1 - 0.8 + 0.75)/8
        x = {"w": x["w"] + (0.1 - 0.8 + 0.75) / 8}
        np.testing.assert_allclose(np_of(arrays)["w"], x["w"], rtol=1e-12)
        # clients apply option II, c_i+ = c_i - c + (x - y_i) / (K lr), K=2, lr=0.1; with all
        # N clients in every round, c <- c + |S|/N mean(dc) keeps c = mean_i c_i
        c_i = [grid.clients[101 + p].state["c_i"]["w"] for p in range(3)]
        np.testing.assert_allclose(s.c_global["w"], np.mean(c_i, axis=0), rtol=1e-12)
        if rnd == 1:  # from c = 0: c_i = -(y_i - x) / 0.2 = -0.5, 2.0, -0.75 -> c = 0.25
            np.testing.assert_allclose(s.c_global["w"], [0.25, 0.25], rtol=1e-12)
    assert m[P.NUM_CLIENTS] == 3


def test_scaffold_reply_without_dc_is_rejected():
    s = build_strategy("scaffold", min_available_nodes=1, min_train_nodes=1)
    grid = grid_of((1, 1.0))
    messages = list(s.configure_train(1, rec(w=[0.0]), ConfigRecord(), grid))
    reply = Message(RecordDict({P.ARRAYS: rec(w=[1.0]), P.METRICS: metrics(0, 1)}),
                    reply_to=messages[0])
    with pytest.raises(P.ReplyError, match="scaffold-dc"):
        s.aggregate_train(1, [reply])


def test_robust_aggregators_hand_values():
    x = rec(w=[0.0])
    specs = [(1, d) for d in (1.0, 1.0, 1.0, 1.0, 20.0)]  # y = (p+1)*d: 1, 2, 3, 4, 100
    _, _, (arrays, _) = one_round(build_strategy("fedmedian", min_available_nodes=5),
                                  grid_of(*specs), x)
    assert np_of(arrays)["w"].tolist() == [3.0]
    _, _, (arrays, _) = one_round(build_strategy("fedtrimmedavg", {"beta": 0.2},
                                                 min_available_nodes=5), grid_of(*specs), x)
    assert np_of(arrays)["w"].tolist() == [3.0]  # drop 1 and 100: mean(2, 3, 4)
    _, _, (arrays, _) = one_round(build_strategy("krum", {"num_malicious_nodes": 1},
                                                 min_available_nodes=5), grid_of(*specs), x)
    assert np_of(arrays)["w"].tolist() in ([2.0], [3.0])  # a central client, never the outlier
    assert STRATEGIES.get("krum").handles_non_averageable
    assert not any(STRATEGIES.get(n).handles_non_averageable for n in STRATEGIES if n != "krum")


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_runs_flower_start_loop(name):
    """Contract: Strategy.start for 2 rounds on 3 loopback clients; observers see every round."""
    train_seen, eval_seen = [], []
    s = build_strategy(name, min_available_nodes=3, min_train_nodes=3, min_evaluate_nodes=3,
                       train_observer=lambda r, g, reps: train_seen.append((r, len(reps))),
                       evaluate_observer=lambda r, reps: eval_seen.append(
                           [v.metrics["accuracy"] for v in reps]))
    result = s.start(grid_of((2, 0.1), (3, -0.05), (1, 0.02)), rec(w=[[1.0, 2.0]], b=[0.5]),
                     num_rounds=2)
    out = np_of(result.arrays)
    assert out["w"].shape == (1, 2) and out["b"].shape == (1,) and np.isfinite(out["w"]).all()
    assert train_seen == [(1, 3), (2, 3)]
    assert eval_seen == [[0.0, 0.1, 0.2]] * 2
    assert result.evaluate_metrics_clientapp[2]["accuracy"] == pytest.approx((0 + 0.3 + 0.2) / 6)


def test_build_strategy_errors():
    with pytest.raises(UserError, match="valid: proximal_mu"):
        build_strategy("fedprox", {"mu": 0.1})
    with pytest.raises(UserError, match="must be like"):
        build_strategy("fedprox", {"proximal_mu": "high"})
    with pytest.raises(UserError, match="proximal_mu must be >= 0"):
        build_strategy("fedprox", {"proximal_mu": -1.0})
    with pytest.raises(UserError, match="beta"):
        build_strategy("fedtrimmedavg", {"beta": 0.7})
    with pytest.raises(UserError, match="common strategy option"):
        build_strategy("fedavg", server_rounds=3)
    with pytest.raises(UserError, match="Did you mean 'fedavg'"):
        build_strategy("fedavgg")
