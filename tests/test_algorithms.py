"""Federated algorithms (fedmllm/federated/algorithms/) on the redesigned core.

1. Server halves on hand-built replies: hand-computed values (no Ray, no model).
2. Equality with Flower 1.42's own strategies on random inputs (``configure_train`` /
   ``aggregate_train`` on hand-built reply Messages).
3. The contract every registered algorithm meets (options in `CONTRACT`, defaults if absent): two
   rounds of our `RoundLoop` whose fake clients run the algorithm's real client half, with
   per-round checkpoints and a bit-identical resume; and the same final state from Flower's
   ``Strategy.start`` driving `AlgorithmStrategy` over a loopback grid.
4. Reply validation (`protocol.validate_reply`) and failed clients in the round loop.
5. The wire codec (`server/records.py`) on 0-d arrays, through Flower's protobuf format.
6. `build_algorithm` errors.

Ported from tests/test_strategies.py, whose ``server/strategies/`` package is gone; every old
test is listed where its assertions now live ("was: test_...").
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
from types import SimpleNamespace
from typing import Callable, Iterable

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp.strategy import Bulyan as FlwrBulyan
from flwr.serverapp.strategy import FedAdagrad as FlwrFedAdagrad
from flwr.serverapp.strategy import FedAdam as FlwrFedAdam
from flwr.serverapp.strategy import FedAvg as FlwrFedAvg
from flwr.serverapp.strategy import FedAvgM as FlwrFedAvgM
from flwr.serverapp.strategy import FedMedian as FlwrFedMedian
from flwr.serverapp.strategy import FedProx as FlwrFedProx
from flwr.serverapp.strategy import FedTrimmedAvg as FlwrFedTrimmedAvg
from flwr.serverapp.strategy import FedYogi as FlwrFedYogi
from flwr.serverapp.strategy import Krum as FlwrKrum
from flwr.serverapp.strategy import MultiKrum as FlwrMultiKrum

from fedmllm.errors import UserError
from fedmllm.federated import aggregate as A
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import (
    ALGORITHMS, GLOBAL, STATE, LocalResult, Payload, Reply, build_algorithm)
from fedmllm.federated.algorithms.fedprox import PROXIMAL_MU
from fedmllm.federated.algorithms.scaffold import C_GLOBAL, C_LOCAL, CONTROL, DC
from fedmllm.federated.checkpoint import CheckpointStore, RoundCheckpoint
from fedmllm.federated.client import ClientStore
from fedmllm.federated.rounds import LoopSettings, RawReply, RoundFailed, RoundLoop
from server.inprocess import InProcessGrid
from server.records import (
    decode_groups, decode_metrics, decode_payload, encode_payload, encode_reply, numpy_to_record,
    record_to_numpy)
from server.strategy import AlgorithmStrategy

Arrays = dict[str, np.ndarray]
NODE = 101  # node ids differ from partition ids: node = NODE + partition


# ---------------------------------------------------------------------------------------------
# fixtures and helpers

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


@pytest.fixture(autouse=True)
def no_gc_in_flower_arrays(monkeypatch):
    """Flower's ``ArrayRecord.to_numpy_ndarrays(keep_input=False)`` (its Bulyan) runs a full
    ``gc.collect()`` per array, ~0.3 s each once torch is loaded; skip it (memory only)."""
    import flwr.app.message.arrayrecord as arrayrecord

    monkeypatch.setattr(arrayrecord, "gc", SimpleNamespace(collect=lambda: 0))


_message_ids = itertools.count(1)


def wire(msg: Message) -> Message:
    """``msg`` through Flower's protobuf wire format and back (as `server.inprocess` sends it)."""
    if not msg.metadata.message_id:
        msg.metadata.__dict__["_message_id"] = f"m{next(_message_ids)}"
    return message_from_proto(message_to_proto(msg))


class LoopbackGrid(InProcessGrid):
    """`server.inprocess.InProcessGrid` whose nodes are plain handler functions keyed by node id
    (message -> reply, both through the wire format); no SuperLink, no Ray, no ClientApp."""

    def __init__(self, clients: dict[int, Callable[[Message], Message]]):
        super().__init__(None, len(clients), list(clients))
        self.clients = clients

    def deliver(self, msg: Message) -> Message:  # noqa: D102
        received = wire(msg)
        return wire(self.clients[received.metadata.dst_node_id](received))

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.clients)


def node(pid: int, handler: Callable[[Payload], RawReply]) -> Callable[[Message], Message]:
    """A loopback node of partition ``pid``: answers QUERY with its partition id (as
    clients/app.py does) and TRAIN with ``handler``'s reply to the decoded payload."""
    def handle(msg: Message) -> Message:
        if msg.metadata.message_type == MessageType.QUERY:
            return Message(RecordDict({P.METRICS: MetricRecord({P.PARTITION_ID: pid})}), reply_to=msg)
        try:
            answer = handler(decode_payload(msg.content))
        except Exception as e:  # noqa: BLE001 - an error reply, as Flower's simulation makes it
            error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(e).__name__}: {e}")
            return Message(error, reply_to=msg)
        return Message(encode_reply(answer.arrays, answer.metrics), reply_to=msg)
    return handle


def grid_of(handlers: list) -> LoopbackGrid:
    return LoopbackGrid({NODE + pid: node(pid, h) for pid, h in enumerate(handlers)})


def st(**arrays) -> Arrays:
    return {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}


def metrics(pid: int, n: int, loss: float = 1.0, failed: int = 0) -> dict:
    return {P.NUM_EXAMPLES: n, P.TRAIN_LOSS: loss, P.PARTITION_ID: pid, P.CLIENT_FAILED: failed,
            P.BYTES_IN: 100, P.BYTES_OUT: 10, P.SECONDS: 0.5 + pid}


class ShiftClient:
    """A deterministic 'trainer' (the old test's): y = x + delta * (pid + 1) per key. Under
    SCAFFOLD it keeps c_i across rounds and replies dc_i by option II
    (`aggregate.scaffold_client_control`, K = ``steps``, eta_l = ``lr``)."""

    def __init__(self, pid: int, n: int, delta: float, lr: float = 0.1, steps: int = 2):
        self.pid, self.n, self.delta, self.lr, self.steps = pid, n, delta, lr, steps
        self.c_i: Arrays | None = None
        self.failed = 0

    def __call__(self, payload: Payload) -> RawReply:
        x = payload.arrays[GLOBAL]
        y = {k: v + self.delta * (self.pid + 1) for k, v in x.items()}
        groups = {STATE: y}
        if C_GLOBAL in payload.arrays:
            c = payload.arrays[C_GLOBAL]
            ci = self.c_i if self.c_i is not None else {k: np.zeros_like(v) for k, v in c.items()}
            self.c_i, groups[DC] = A.scaffold_client_control(ci, c, x, y, self.steps, self.lr)
        return RawReply(groups, metrics(self.pid, self.n, loss=float(self.pid), failed=self.failed))


def shift_clients(*specs) -> list[ShiftClient]:
    """specs: (n_examples, delta) per client, partition ids 0.."""
    return [ShiftClient(pid, n, d) for pid, (n, d) in enumerate(specs)]


def server_round(algo, rnd: int, x: Arrays, clients: list) -> tuple[Arrays, dict[int, Payload]]:
    """One round of the server half: configure each client, let it answer, validate the reply
    against ``expected``, aggregate in partition order (what `RoundLoop.round` does)."""
    payloads = {pid: algo.configure(rnd, pid, x) for pid in range(len(clients))}
    replies = []
    for pid, client in enumerate(clients):
        raw = client(payloads[pid])
        replies.append(P.validate_reply(pid, raw.arrays, raw.metrics, algo.expected(rnd, pid, x)))
    return algo.aggregate(rnd, x, replies), payloads


def strategy_round(strategy, grid: LoopbackGrid, x: Arrays, rnd: int = 1, config=None):
    """configure_train -> loopback clients -> aggregate_train (replies handed in reverse order)."""
    messages = list(strategy.configure_train(rnd, numpy_to_record(x), ConfigRecord(config or {}), grid))
    replies = grid.send_and_receive(messages)
    arrays, m = strategy.aggregate_train(rnd, replies[::-1])
    return messages, (None if arrays is None else record_to_numpy(arrays)), m


# ---------------------------------------------------------------------------------------------
# (1) server halves: hand values

def test_fedavg_hand_values():
    """was: test_fedavg_hand_values_and_metric_reduction (the aggregate)."""
    algo = build_algorithm("fedavg")
    algo.init(st(w=[0.0, 1.0]))
    new, _ = server_round(algo, 1, st(w=[0.0, 1.0]), shift_clients((1, 1.0), (3, 2.0)))
    # y = x + 1 (n=1), y = x + 4 (n=3): 0.25*[1, 2] + 0.75*[4, 5] = [3.25, 4.25]
    np.testing.assert_allclose(new["w"], [3.25, 4.25])


def test_metric_reduction_on_flower_messages():
    """was: test_fedavg_hand_values_and_metric_reduction (the metrics, via AlgorithmStrategy)."""
    s = AlgorithmStrategy(build_algorithm("fedavg", num_clients=2))
    _, new, m = strategy_round(s, grid_of(shift_clients((1, 1.0), (3, 2.0))), st(w=[0.0, 1.0]))
    np.testing.assert_allclose(new["w"], [3.25, 4.25])
    assert m[P.TRAIN_LOSS] == pytest.approx(0.75)  # 0.25*0 + 0.75*1
    assert m[P.NUM_EXAMPLES] == 4 and m[P.BYTES_IN] == 200 and m[P.SECONDS] == 1.5
    assert P.PARTITION_ID not in m and m[P.NUM_CLIENTS] == 2 and m[P.CLIENT_FAILED] == 0
    # was (test_every_strategy_runs_flower_start_loop): client evaluation metrics, weighted by
    # num-examples 2, 3, 1; evaluation is server-side now, the reduction is the same function
    evals = [{P.NUM_EXAMPLES: n, "accuracy": pid / 10, P.PARTITION_ID: pid}
             for pid, n in enumerate((2, 3, 1))]
    reduced = P.reduce_metrics(evals, [e[P.NUM_EXAMPLES] for e in evals])
    assert reduced["accuracy"] == pytest.approx((0 + 0.3 + 0.2) / 6) and reduced[P.NUM_EXAMPLES] == 6


def test_fedavgm_matches_hsu_update_over_three_rounds():
    algo = build_algorithm("fedavgm", {"server_learning_rate": 0.5, "server_momentum": 0.9})
    clients = shift_clients((2, -3.0), (2, 0.5))  # y = x - 3 and y = x + 1: average update -1
    x = ref = st(w=[1.0])
    algo.init(x)
    v = None
    for rnd in (1, 2, 3):
        x, _ = server_round(algo, rnd, x, clients)
        ref, v = A.fedavgm(ref, {"w": ref["w"] - 1.0}, v, server_lr=0.5, server_momentum=0.9)
        np.testing.assert_allclose(x["w"], ref["w"], rtol=1e-12)
    # by hand: g = 1 each round; v = 1, 1.9, 2.71; x = 1 - 0.5*(1 + 1.9 + 2.71) = -1.805
    np.testing.assert_allclose(x["w"], [-1.805])


@pytest.mark.parametrize("name", ["fedadagrad", "fedadam", "fedyogi"])
def test_reddi_algorithms_follow_algorithm_2(name):
    hp = {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    algo = build_algorithm(name, hp)
    clients = shift_clients((1, 0.2), (3, -0.1))  # updates +0.2 (n=1), -0.2 (n=3): weighted -0.1
    x = ref = st(w=[0.5, -0.5])
    algo.init(x)
    m = v = None
    for rnd in (1, 2, 3):
        x, _ = server_round(algo, rnd, x, clients)
        ref, m, v = A.fedopt(name[3:], ref, {"w": ref["w"] - 0.1}, m, v, **hp)
        np.testing.assert_allclose(x["w"], ref["w"], rtol=1e-12)
    assert algo.resolved_options()["v_init"] == pytest.approx(1e-6)  # tau^2, Algorithm 2


def scaffold_rounds(drive: str):
    """Three SCAFFOLD rounds on three shift clients, through the server half or through
    AlgorithmStrategy's messages; yields (round, new x, algorithm, clients, the array records
    each client was sent, the aggregated metrics or None)."""
    clients = shift_clients((1, 0.1), (2, -0.2), (5, 0.05))
    algo = build_algorithm("scaffold", {"server_lr": 1.0}, num_clients=3)
    x = st(w=[1.0, 2.0])
    if drive == "server half":
        algo.init(x)
        for rnd in (1, 2, 3):
            x, payloads = server_round(algo, rnd, x, clients)
            yield rnd, x, algo, clients, [set(p.arrays) for p in payloads.values()], None
    else:
        s, grid = AlgorithmStrategy(algo), grid_of(clients)
        for rnd in (1, 2, 3):
            messages, x, m = strategy_round(s, grid, x, rnd, {P.LR: 0.1, P.LOCAL_STEPS: 2})
            yield rnd, x, algo, clients, [set(msg.content.array_records) for msg in messages], m


@pytest.mark.parametrize("drive", ["server half", "flower messages"])
def test_scaffold_round_trip_of_control_variates(drive):
    x = np.array([1.0, 2.0])
    for rnd, new, algo, clients, sent, m in scaffold_rounds(drive):
        assert sent == [{GLOBAL, C_GLOBAL}] * 3  # c travels as a second record, same keys as x
        # hand: y_i - x = 0.1, -0.4, 0.15; weighted (1, 2, 5)/8 mean = (0.1 - 0.8 + 0.75)/8
        x = x + (0.1 - 0.8 + 0.75) / 8
        np.testing.assert_allclose(new["w"], x, rtol=1e-12)
        # clients apply option II, c_i+ = c_i - c + (x - y_i) / (K lr), K=2, lr=0.1; with all
        # N clients in every round, c <- c + |S|/N mean(dc) keeps c = mean_i c_i
        c_i = [c.c_i["w"] for c in clients]
        np.testing.assert_allclose(algo.c_global["w"], np.mean(c_i, axis=0), rtol=1e-12)
        if rnd == 1:  # from c = 0: c_i = -(y_i - x) / 0.2 = -0.5, 2.0, -0.75 -> c = 0.25
            np.testing.assert_allclose(algo.c_global["w"], [0.25, 0.25], rtol=1e-12)
        if m is not None:
            assert m[P.NUM_CLIENTS] == 3


def test_robust_algorithms_hand_values():
    x = st(w=[0.0])
    clients = shift_clients(*[(1, d) for d in (1.0, 1.0, 1.0, 1.0, 20.0)])  # y = 1, 2, 3, 4, 100

    def one(name, options=None):
        algo = build_algorithm(name, options)
        algo.init(x)
        return server_round(algo, 1, x, clients)[0]["w"].tolist()

    assert one("fedmedian") == [3.0]
    assert one("fedtrimmedavg", {"beta": 0.2}) == [3.0]  # drop 1 and 100: mean(2, 3, 4)
    assert one("krum", {"num_malicious_nodes": 1}) in ([2.0], [3.0])  # central, never the outlier
    # scores with n - f - 2 = 2 neighbours: 5, 2, 2, 5, huge -> the two most central: 2 and 3
    assert one("multikrum", {"num_malicious_nodes": 1, "num_nodes_to_select": 2}) == [2.5]
    assert ALGORITHMS.get("krum").handles_non_averageable
    assert not any(ALGORITHMS.get(n).handles_non_averageable for n in ALGORITHMS if n != "krum")


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_payload_and_expected_reply(name):
    """was: test_fedprox_configure_train_carries_proximal_mu (the payload part)."""
    x = st(w=[[1.0, 2.0]], b=[0.5])
    algo = build_algorithm(name, {"proximal_mu": 0.05} if name == "fedprox" else None, num_clients=2)
    algo.init(x)
    payload = algo.configure(3, 1, x)
    shapes = {"w": (1, 2), "b": (1,)}
    assert {k: v.shape for k, v in payload.arrays[GLOBAL].items()} == shapes
    for k in x:
        np.testing.assert_array_equal(payload.arrays[GLOBAL][k], x[k])
    expected = algo.expected(3, 1, x)
    if name == "fedprox":
        assert payload.config == {PROXIMAL_MU: 0.05} and set(payload.arrays) == {GLOBAL}
        assert expected == {STATE: shapes}
    elif name == "scaffold":
        assert set(payload.arrays) == {GLOBAL, C_GLOBAL} and payload.config == {CONTROL: "option2"}
        assert all(not v.any() and v.shape == x[k].shape for k, v in payload.arrays[C_GLOBAL].items())
        assert expected == {STATE: shapes, DC: shapes}
    else:
        assert set(payload.arrays) == {GLOBAL} and payload.config == {} and expected == {STATE: shapes}


def test_fedprox_configure_train_carries_proximal_mu():
    s = AlgorithmStrategy(build_algorithm("fedprox", {"proximal_mu": 0.05}, num_clients=2))
    messages = list(s.configure_train(3, numpy_to_record(st(w=[0.0])), ConfigRecord({P.LR: 0.1}),
                                      grid_of(shift_clients((1, 1.0), (1, 1.0)))))
    assert len(messages) == 2
    for msg in messages:
        cfg = msg.content[P.CONFIG]
        assert cfg[PROXIMAL_MU] == 0.05 and cfg[P.SERVER_ROUND] == 3 and cfg[P.LR] == 0.1
        assert cfg[P.ALGORITHM] == "fedprox"


def test_scaffold_reply_without_dc_is_rejected():
    algo = build_algorithm("scaffold")
    x = st(w=[0.0])
    algo.init(x)
    with pytest.raises(P.ReplyError, match="scaffold-dc"):
        P.validate_reply(0, {STATE: st(w=[1.0])}, metrics(0, 1), algo.expected(1, 0, x))


# ---------------------------------------------------------------------------------------------
# (2) equality with Flower's strategies on random inputs

SEEDS = [0, 1, 2]
DTYPES = [np.float32, np.float64]
SHAPES = {"a": (3, 4), "b": (5,), "layer.c": (2, 2, 2)}


def random_start(seed: int, dtype) -> Arrays:
    rng = np.random.default_rng([seed, 0])  # values around 3: no cancellation in float32 sums
    return {k: (3.0 + 0.5 * rng.normal(size=s)).astype(dtype) for k, s in SHAPES.items()}


def random_counts(seed: int, n: int) -> list[int]:
    return [int(c) for c in np.random.default_rng([seed, 1]).integers(1, 100, size=n)]


def updates(seed: int):
    """answer(rnd, pid, x): client pid's state in round rnd, x + a random update (so both sides
    of a multi-round comparison see the same Delta_t from their own x_t). Per coordinate all
    clients move the same way by 0.05 to 0.25: |Delta_t| >= 0.05 keeps the adaptive steps
    m / (sqrt(v) + tau) well conditioned, so Flower's float32 arithmetic meets rtol 1e-6."""
    def answer(rnd, pid, x):
        sign = np.random.default_rng([seed, 2, rnd])
        rng = np.random.default_rng([seed, 2, rnd, pid])
        return {k: (v + np.where(sign.random(v.shape) < 0.5, -1.0, 1.0)
                    * (0.05 + 0.2 * rng.random(v.shape))).astype(v.dtype) for k, v in x.items()}
    return answer


def outliers(seed: int, f: int):
    """answer(rnd, pid, x): states around a centre, the first ``f`` clients pushed far away."""
    def answer(rnd, pid, x):
        rng = np.random.default_rng([seed, 3, pid])
        scale = 8.0 if pid < f else 0.3
        return {k: (v + scale * rng.normal(size=v.shape)).astype(v.dtype) for k, v in x.items()}
    return answer


def ours_round(algo, rnd, x, answer, counts) -> Arrays:
    clients = [lambda payload, pid=pid: RawReply({STATE: answer(rnd, pid, payload.arrays[GLOBAL])},
                                                 metrics(pid, counts[pid]))
               for pid in range(len(counts))]
    return server_round(algo, rnd, x, clients)[0]


def flower_round(strategy, rnd, x, answer, counts) -> tuple[Arrays, list[Message]]:
    """One round of a Flower strategy: configure_train on a grid of len(counts) nodes, hand-built
    replies (``arrays`` + ``metrics`` records) in partition order, aggregate_train."""
    grid = LoopbackGrid({NODE + pid: None for pid in range(len(counts))})
    messages = list(strategy.configure_train(rnd, numpy_to_record(x), ConfigRecord(), grid))
    replies = []
    for msg in sorted(messages, key=lambda m: m.metadata.dst_node_id):
        pid = msg.metadata.dst_node_id - NODE
        y = answer(rnd, pid, record_to_numpy(msg.content["arrays"]))
        content = RecordDict({"arrays": numpy_to_record(y),
                              "metrics": MetricRecord({"num-examples": counts[pid]})})
        replies.append(Message(content, reply_to=msg))
    arrays, _ = strategy.aggregate_train(rnd, replies)
    return record_to_numpy(arrays), messages


def assert_state_close(ours: Arrays, theirs: Arrays, rtol=1e-6):
    assert list(ours) == list(theirs)
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape, k
        np.testing.assert_allclose(ours[k], theirs[k], rtol=rtol, err_msg=k)


def compare(algo, flwr, seed, dtype, rounds=3, n=5, answer=None):
    """``rounds`` rounds of our algorithm and of Flower's strategy; states equal every round."""
    answer = answer or updates(seed)
    counts = random_counts(seed, n)
    x = y = random_start(seed, dtype)
    algo.init(x)
    for rnd in range(1, rounds + 1):
        x = ours_round(algo, rnd, x, answer, counts)
        y, _ = flower_round(flwr, rnd, y, answer, counts)
        assert_state_close(x, y)
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_fedavg_and_fedprox_equal_flower(seed, dtype):
    compare(build_algorithm("fedavg"), FlwrFedAvg(), seed, dtype)
    algo, flwr = build_algorithm("fedprox", {"proximal_mu": 0.3}), FlwrFedProx(proximal_mu=0.3)
    compare(algo, flwr, seed, dtype, rounds=2)
    x = random_start(seed, dtype)
    _, messages = flower_round(flwr, 1, x, updates(seed), [1, 2])
    ours = algo.configure(1, 0, x).config
    for msg in messages:  # configure carries the same mu under the same key
        assert msg.content["config"][PROXIMAL_MU] == ours[PROXIMAL_MU] == 0.3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_fedavgm_equals_flower(seed, dtype):
    hp = {"server_learning_rate": 0.7, "server_momentum": 0.9}
    compare(build_algorithm("fedavgm", hp), FlwrFedAvgM(**hp), seed, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name,flwr_cls", [("fedadagrad", FlwrFedAdagrad), ("fedyogi", FlwrFedYogi)])
def test_flower_adagrad_yogi_equal_ours_with_zero_v_init(name, flwr_cls, seed, dtype):
    hp = {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    if name == "fedadagrad":  # Flower's FedAdagrad fixes beta_1 = 0 and has no beta_2
        hp = {"eta": 0.1, "tau": 1e-3}
    compare(build_algorithm(name, {**hp, "v_init": 0.0}), flwr_cls(**hp), seed, dtype)


def test_flower_adagrad_yogi_equal_ours_hand_inputs():
    """was: test_flower_adagrad_yogi_equal_ours_with_zero_v_init (its hand inputs, rtol 1e-12)."""
    for name, flwr_cls in [("fedadagrad", FlwrFedAdagrad), ("fedyogi", FlwrFedYogi)]:
        hp = {"eta": 0.1, "tau": 1e-3} if name == "fedadagrad" else \
            {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
        algo, flwr = build_algorithm(name, {**hp, "v_init": 0.0}), flwr_cls(**hp)
        shift = {0: 0.2, 1: -0.1}  # y = x + delta (pid + 1)

        def answer(rnd, pid, x):
            return {k: v + shift[pid] * (pid + 1) for k, v in x.items()}
        x = y = st(w=[0.5, -0.5])
        algo.init(x)
        for rnd in (1, 2, 3):
            x = ours_round(algo, rnd, x, answer, [1, 3])
            y, _ = flower_round(flwr, rnd, y, answer, [1, 3])
            np.testing.assert_allclose(x["w"], y["w"], rtol=1e-12)


def test_flower_fedadam_differs_by_bias_correction():
    hp = {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    ours, flwr = build_algorithm("fedadam", {**hp, "v_init": 0.0}), FlwrFedAdam(**hp)

    def answer(rnd, pid, x):  # updates +0.2 (n=1), -0.2 (n=3)
        return {k: v + (0.2, -0.2)[pid] for k, v in x.items()}
    x0 = st(w=[0.5])
    ours.init(x0)
    a = ours_round(ours, 1, x0, answer, [1, 3])
    b, _ = flower_round(flwr, 1, x0, answer, [1, 3])
    # Flower scales the step by sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) with t = server_round = 1
    factor = np.sqrt(1 - 0.99 ** 2) / (1 - 0.9 ** 2)
    step_ours, step_flwr = a["w"][0] - 0.5, b["w"][0] - 0.5
    assert step_flwr / step_ours == pytest.approx(factor, rel=1e-9)
    assert abs(factor - 1) > 0.2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_flower_fedadam_differs_by_bias_correction_on_random_inputs(seed, dtype):
    """Same Delta_t on both sides (relative updates), so m_t and v_t agree and every round's step
    differs exactly by Flower's factor sqrt(1 - b2^(t+1)) / (1 - b1^(t+1))."""
    hp = {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    ours, flwr = build_algorithm("fedadam", {**hp, "v_init": 0.0}), FlwrFedAdam(**hp)
    answer, counts = updates(seed), random_counts(seed, 5)
    x = y = random_start(seed, dtype)
    ours.init(x)
    for t in (1, 2, 3):
        new_x = ours_round(ours, t, x, answer, counts)
        new_y, _ = flower_round(flwr, t, y, answer, counts)
        factor = np.sqrt(1 - 0.99 ** (t + 1)) / (1 - 0.9 ** (t + 1))
        predicted = {k: y[k].astype(np.float64) + factor * (new_x[k].astype(np.float64) - x[k])
                     for k in x}
        # Flower's eta_norm is a numpy float64 scalar, so its FedAdam returns float64 states
        # for float32 ones (ours keeps the state's dtype)
        assert all(v.dtype == dtype for v in new_x.values())
        assert all(v.dtype == np.float64 for v in new_y.values())
        assert_state_close(predicted, new_y)
        assert not np.allclose(new_x["a"], new_y["a"], rtol=1e-3)
        x, y = new_x, new_y


ROBUST = [
    ("fedmedian", {}, lambda: FlwrFedMedian()),
    ("fedtrimmedavg", {"beta": 0.2}, lambda: FlwrFedTrimmedAvg(beta=0.2)),
    ("krum", {"num_malicious_nodes": 1}, lambda: FlwrKrum(num_malicious_nodes=1)),
    ("multikrum", {"num_malicious_nodes": 1, "num_nodes_to_select": 3},
     lambda: FlwrMultiKrum(num_malicious_nodes=1, num_nodes_to_select=3)),
    ("bulyan", {"num_malicious_nodes": 1}, lambda: FlwrBulyan(num_malicious_nodes=1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name,options,flwr", ROBUST, ids=[r[0] for r in ROBUST])
def test_robust_algorithms_equal_flower(name, options, flwr, seed, dtype):
    """Through the Algorithm objects (the pure rules: tests/test_robust.py); 7 clients, one far
    away, unequal example counts (MultiKrum's mean is weighted by them, as Flower's)."""
    out = compare(build_algorithm(name, options), flwr(), seed, dtype, rounds=1, n=7,
                  answer=outliers(seed, 1))
    centre = random_start(seed, dtype)
    assert np.abs(out["a"] - centre["a"]).max() < 2.0  # the pushed client never dominates


# ---------------------------------------------------------------------------------------------
# (3) the contract of every registered algorithm

COUNTS = [3, 1, 4, 2, 5]  # 5 clients, unequal sizes
ROUNDS, STEPS = 2, 3
CONTRACT_SHAPES = {"a": (3, 4), "b": (5,), "layer.0.c": (2, 2)}

# The options an algorithm's contract run uses (a registered name without a row: its defaults).
CONTRACT: dict[str, dict] = {
    "fedavg": {},
    "fedprox": {"proximal_mu": 0.5},
    "scaffold": {},
    "fedavgm": {"server_momentum": 0.5},
    "fedadam": {"eta": 0.05},
    "fedyogi": {"eta": 0.05},
    "fedadagrad": {"eta": 0.05},
    "fedmedian": {},
    "fedtrimmedavg": {"beta": 0.2},
    "krum": {"num_malicious_nodes": 1},
    "multikrum": {"num_malicious_nodes": 1, "num_nodes_to_select": 3},
    "bulyan": {"num_malicious_nodes": 0},
}


def with_reference(algo):
    """A rule that needs the server's reference update (FLTrust) gets a fixed one: the global
    state moved by a seeded direction (what a server's root-set training would supply)."""
    if getattr(algo, "needs_reference", False):
        def reference(server_round, state):
            rng = np.random.default_rng(server_round)
            return {k: (v + 0.01 * rng.normal(size=v.shape)).astype(v.dtype) for k, v in state.items()}
        algo.reference = reference
    return algo


def initial_state(shapes=CONTRACT_SHAPES) -> Arrays:
    rng = np.random.default_rng(7)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


class FakeClients:
    """All clients of one run. Each round a client runs the algorithm's real client half: the
    algorithm is looked up by the payload's name and built with no options (it reads its settings
    from the payload, as `ClientRuntime` does), ``prepare`` gives the state and hooks, a
    deterministic local training runs STEPS SGD steps on 0.5 ||p - t_pid||^2 with the hooks'
    loss terms (FedProx) and gradient corrections (SCAFFOLD), ``finish`` gives the reply and the
    new local state, kept in a `ClientStore` (c_i)."""

    def __init__(self, store: ClientStore, initial: Arrays, counts=COUNTS):
        self.store, self.initial, self.counts = store, initial, counts
        self.targets = {}  # t_pid: the initial state moved by (pid + 1) x noise
        for pid in range(len(counts)):
            rng = np.random.default_rng([11, pid])
            self.targets[pid] = {k: torch.tensor(v + (pid + 1) * rng.normal(size=v.shape).astype(np.float32))
                                 for k, v in initial.items()}

    def train(self, pid: int, payload: Payload) -> RawReply:
        cfg = payload.config
        algo = ALGORITHMS.get(str(cfg[P.ALGORITHM]))()
        rnd, lr, steps, system = (int(cfg[P.SERVER_ROUND]), float(cfg[P.LR]), int(cfg[P.LOCAL_STEPS]),
                                  str(cfg[P.SYSTEM]))
        local = self.store.load(system, pid, rnd)
        state, hooks, plan = algo.prepare(payload, local, None, self.initial)
        params = {k: torch.nn.Parameter(torch.tensor(np.array(state[k]))) for k in plan.trained()}
        for h in hooks:
            h.on_start(None, params)
        for _ in range(steps):
            loss = sum(0.5 * (p - self.targets[pid][k]).pow(2).sum() for k, p in params.items())
            for h in hooks:
                extra = h.loss_term(None, params)
                loss = loss if extra is None else loss + extra
            loss.backward()
            for h in hooks:
                h.after_backward(None, params)
            with torch.no_grad():
                for p in params.values():
                    p -= lr * p.grad
                    p.grad = None
        for h in hooks:
            h.on_end(None, params)
        trained = {**state, **{k: p.detach().numpy().copy() for k, p in params.items()}}
        arrays, new_local = algo.finish(payload, local, plan, LocalResult(trained, steps, lr, hooks))
        self.store.save(system, pid, rnd, new_local)
        return RawReply(arrays, {P.NUM_EXAMPLES: self.counts[pid], P.TRAIN_LOSS: float(loss.detach()),
                                 P.PARTITION_ID: pid, P.CLIENT_FAILED: 0, P.STEPS: steps})


class Crash(Exception):
    """The server dies (in the middle of a round)."""


class LocalTransport:
    """The round loop's `Transport` in memory: each payload through the wire format (records and
    protobuf) to its fake client, the reply back the same way; ``crash_in_round``: the server dies
    in that round after every client trained (their local state of that round is saved)."""

    def __init__(self, clients: FakeClients, crash_in_round: int | None = None):
        self.clients, self.crash_in_round = clients, crash_in_round

    def exchange(self, server_round, payloads):
        raw = {}
        for pid, payload in sorted(payloads.items()):
            msg = wire(Message(encode_payload(payload), dst_node_id=NODE + pid,
                               message_type=MessageType.TRAIN))
            answer = self.clients.train(pid, decode_payload(msg.content))
            back = wire(Message(encode_reply(answer.arrays, answer.metrics), reply_to=msg))
            raw[pid] = RawReply(decode_groups(back.content), decode_metrics(back.content))
        if server_round == self.crash_in_round:
            raise Crash(f"killed in round {server_round}")
        return raw, {}


class RecordingStore(CheckpointStore):
    """A CheckpointStore that records which rounds it saved."""

    def __init__(self, root):
        super().__init__(root)
        self.saved: list[int] = []

    def save(self, system, ckpt):
        self.saved.append(ckpt.round)
        return super().save(system, ckpt)


SYSTEM = "sys"


def loop_settings(num_clients=len(COUNTS), **changes) -> LoopSettings:
    return LoopSettings(**{"system": SYSTEM, "rounds": ROUNDS, "num_clients": num_clients,
                           "clients_per_round": 0, "seed": 5, "local_steps": STEPS, "base_lr": 0.1,
                           "lr_decay": 0.5, **changes})


def run_loop(name, root, options=None, *, shapes=CONTRACT_SHAPES, crash_in_round=None,
             observer=None, evaluate=None, settings=None):
    """One run of our RoundLoop under ``root`` (checkpoints and client store there); returns
    (final state, events, loop, algorithm, clients)."""
    options = CONTRACT.get(name, {}) if options is None else options
    algo = with_reference(build_algorithm(name, options, num_clients=len(COUNTS)))
    clients = FakeClients(ClientStore(root / "clients"), initial_state(shapes))
    events: list[dict] = []
    loop = RoundLoop(algo, LocalTransport(clients, crash_in_round), loop_settings(**(settings or {})),
                     log=events.append, metrics_size=lambda: 0,
                     checkpoints=RecordingStore(root / "checkpoints"), observer=observer, evaluate=evaluate)
    return loop.run(initial_state(shapes)), events, loop, algo, clients


def rounds_logged(events) -> list[int]:
    return [e["round"] for e in events if e["event"] == "round"]


def assert_identical(a: Arrays, b: Arrays):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), k


def flower_start(name, root, shapes=CONTRACT_SHAPES, options=None):
    """Flower's Strategy.start for ROUNDS rounds driving AlgorithmStrategy over a loopback grid of
    the same fake clients (their own client store)."""
    s = loop_settings()
    options = CONTRACT.get(name, {}) if options is None else options
    algo = with_reference(build_algorithm(name, options, num_clients=len(COUNTS)))
    clients = FakeClients(ClientStore(root / "flower-clients"), initial_state(shapes))
    strategy = AlgorithmStrategy(algo, seed=s.seed, round_config=lambda r: {
        P.LR: s.lr(r), P.LOCAL_STEPS: s.local_steps, P.SYSTEM: s.system})
    grid = grid_of([lambda payload, pid=pid: clients.train(pid, payload) for pid in range(len(COUNTS))])
    result = strategy.start(grid, numpy_to_record(initial_state(shapes)), num_rounds=ROUNDS)
    return record_to_numpy(result.arrays), result


def test_contract_rows_name_registered_algorithms():
    assert set(CONTRACT) <= set(ALGORITHMS.names())


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_contract_round_loop_checkpoints_resume_and_flower_start(name, tmp_path):
    """was: test_every_strategy_runs_flower_start_loop."""
    x0 = initial_state()
    seen, evaluated = [], []

    def observe(rnd, before, replies):
        loss = P.reduce_metrics([r.metrics for r in replies], [r.num_examples for r in replies])
        seen.append((rnd, len(replies), loss[P.TRAIN_LOSS]))
        return {}
    final, events, loop, _, _ = run_loop(name, tmp_path / "ref", observer=observe,
                                         evaluate=lambda r, state: evaluated.append((r, state)))
    # (a) states finite, shapes and dtypes kept, the state moved; every round observed, evaluated
    # and checkpointed
    assert {k: (v.shape, v.dtype) for k, v in final.items()} == {k: (v.shape, v.dtype) for k, v in x0.items()}
    assert all(np.isfinite(v).all() for v in final.values())
    assert not np.array_equal(final["a"], x0["a"])
    assert [s[:2] for s in seen] == [(1, len(COUNTS)), (2, len(COUNTS))]
    assert [r for r, _ in evaluated] == [1, 2] and evaluated[-1][1] is final
    assert rounds_logged(events) == [1, 2] and not [e for e in events if e["event"] == "client_failed"]
    assert all(e["clients"] == len(COUNTS) and e["failed"] == 0 for e in events if e["event"] == "round")
    store = loop.checkpoints
    assert store.saved == [1, 2]
    ckpt = store.latest(SYSTEM)
    assert ckpt.round == 2 and ckpt.totals["rounds"] == 2
    assert_identical(ckpt.global_state, final)

    # killed in round 2 after the clients trained: round 1's checkpoint is the latest; a new loop
    # (new algorithm, clients, store objects; same folders) resumes to the bit-identical result
    with pytest.raises(Crash):
        run_loop(name, tmp_path / "resumed", crash_in_round=2)
    assert CheckpointStore(tmp_path / "resumed" / "checkpoints").latest(SYSTEM).round == 1
    resumed, events, loop, _, _ = run_loop(name, tmp_path / "resumed")
    assert rounds_logged(events) == [2] and loop.checkpoints.saved == [2]
    assert_identical(resumed, final)

    # the last round's folder deleted (older ones are pruned): the next run starts over, and the
    # clients' stale files of rounds 1 and 2 are never read
    folder = tmp_path / "resumed" / "checkpoints" / SYSTEM
    shutil.rmtree(folder / f"round-{ROUNDS:04d}")
    assert CheckpointStore(folder.parent).latest(SYSTEM) is None
    again, events, _, _, _ = run_loop(name, tmp_path / "resumed")
    assert rounds_logged(events) == [1, 2]
    assert_identical(again, final)

    # (b) Flower's Strategy.start driving AlgorithmStrategy: the same final state
    out, result = flower_start(name, tmp_path)
    assert_identical(out, final)
    for rnd in (1, 2):
        m = result.train_metrics_clientapp[rnd]
        assert m[P.NUM_CLIENTS] == len(COUNTS) and m[P.NUM_EXAMPLES] == sum(COUNTS)
        assert m[P.CLIENT_FAILED] == 0 and P.PARTITION_ID not in m
        assert m[P.TRAIN_LOSS] == pytest.approx(seen[rnd - 1][2], rel=1e-12)  # same clients' losses
    assert result.evaluate_metrics_clientapp == {}  # the global model is evaluated server-side


def test_client_hooks_shape_local_training(tmp_path):
    """The fake clients really run the hooks: FedProx with mu = 0 is FedAvg bit for bit (no hook),
    with mu > 0 it is not; SCAFFOLD's round 1 (c = c_i = 0: no correction) is FedAvg's round 1,
    round 2 is not."""
    fedavg, *_ = run_loop("fedavg", tmp_path / "fedavg")
    fedprox0, *_ = run_loop("fedprox", tmp_path / "fedprox0", {"proximal_mu": 0.0})
    assert_identical(fedprox0, fedavg)
    fedprox, *_ = run_loop("fedprox", tmp_path / "fedprox")
    assert not np.allclose(fedprox["a"], fedavg["a"], rtol=1e-4)
    one = {"rounds": 1}
    avg1, *_ = run_loop("fedavg", tmp_path / "fedavg1", settings=one)
    scaffold1, *_ = run_loop("scaffold", tmp_path / "scaffold1", settings=one)
    for k in avg1:
        np.testing.assert_allclose(scaffold1[k], avg1[k], rtol=1e-6)
    scaffold, *_ = run_loop("scaffold", tmp_path / "scaffold")
    assert not np.allclose(scaffold["a"], fedavg["a"], rtol=1e-4)


@pytest.mark.parametrize("control", ["option2", "gradient"])
def test_scaffold_controls_stay_the_mean_of_the_clients(control, tmp_path):
    """With every client in every round, c stays the mean of the c_i the clients keep."""
    final, _, _, algo, clients = run_loop("scaffold", tmp_path, {"control": control})
    c_i = [clients.store.load(SYSTEM, pid, ROUNDS + 1)[C_LOCAL] for pid in range(len(COUNTS))]
    for k in final:
        assert algo.c_global[k].shape == final[k].shape
        np.testing.assert_allclose(algo.c_global[k], np.mean([c[k] for c in c_i], axis=0),
                                   rtol=1e-5, atol=1e-6)
        assert np.abs(algo.c_global[k]).max() > 0


# ---------------------------------------------------------------------------------------------
# (4) reply validation

REPLY_SHAPES = {"w": (2, 3), "b": (3,)}
EXPECTED = {STATE: dict(REPLY_SHAPES), DC: dict(REPLY_SHAPES)}  # SCAFFOLD's: two records


def good_reply(pid: int = 1, n: int = 4, value: float = 1.0) -> tuple[dict, dict]:
    arrays = {g: {k: np.full(s, value + pid, dtype=np.float32) for k, s in REPLY_SHAPES.items()}
              for g in EXPECTED}
    return arrays, metrics(pid, n)


def _set(group, key, value):
    def change(arrays, m):
        arrays[group][key] = value
    return change


def _metric(key, value):
    def change(arrays, m):
        m[key] = value
    return change


def _drop_metric(key):
    def change(arrays, m):
        del m[key]
    return change


def _nan(arrays, m):
    arrays[STATE]["w"] = arrays[STATE]["w"].copy()
    arrays[STATE]["w"][0, 1] = np.nan


FAULTS = {  # name: (change to a good reply, what the ReplyError says)
    "wrong shape": (_set(STATE, "w", np.zeros((3, 2), np.float32)), r"record 'state' does not match "
                    r"what was expected: shape mismatch \[w: got \(3, 2\), expected \(2, 3\)\]"),
    "extra key": (_set(STATE, "z", np.zeros(1, np.float32)), r"record 'state' .*: unexpected \[z\]"),
    "missing key": (lambda a, m: a[DC].pop("b"), r"record 'scaffold-dc' .*: missing \[b\]"),
    "missing record": (lambda a, m: a.pop(DC),
                       r"array records missing \['scaffold-dc'\], unexpected \[\]"),
    "extra record": (lambda a, m: a.update(bogus={}),
                     r"array records missing \[\], unexpected \['bogus'\]"),
    "nan": (_nan, r"state/w has 1 non-finite value"),
    "inf": (_set(DC, "b", np.full(3, np.inf, np.float32)), r"scaffold-dc/b has 3 non-finite value"),
    "negative num-examples": (_metric(P.NUM_EXAMPLES, -3),
                              r"num-examples must be a positive integer, got -3"),
    "zero num-examples": (_metric(P.NUM_EXAMPLES, 0), r"num-examples must be a positive integer, got 0"),
    "non-integer num-examples": (_metric(P.NUM_EXAMPLES, 2.5),
                                 r"num-examples must be a positive integer, got 2.5"),
    "bool num-examples": (_metric(P.NUM_EXAMPLES, True),
                          r"num-examples must be a positive integer, got True"),
    "list num-examples": (_metric(P.NUM_EXAMPLES, [4]),
                          r"metric 'num-examples' must be a number, got \[4\]"),
    "nan metric": (_metric(P.TRAIN_LOSS, float("nan")), r"metric 'train-loss' is not finite"),
    "inf in a list metric": (_metric("task-losses", [1.0, math.inf]), r"metric 'task-losses' is not finite"),
    "missing num-examples": (_drop_metric(P.NUM_EXAMPLES), r"has no metric 'num-examples'"),
    "missing train-loss": (_drop_metric(P.TRAIN_LOSS), r"has no metric 'train-loss'"),
    "missing partition-id": (_drop_metric(P.PARTITION_ID), r"has no metric 'partition-id'"),
    "wrong partition id": (_metric(P.PARTITION_ID, 2), r"claims partition 2, sent to 1"),
    "fractional partition id": (_metric(P.PARTITION_ID, 1.5), r"claims partition 1.5, sent to 1"),
    "integer dtype": (_set(STATE, "b", np.ones(3, np.int64)),
                      r"state/b has dtype int64, expected floating point"),
    "bool dtype": (_set(DC, "w", np.ones((2, 3), bool)),
                   r"scaffold-dc/w has dtype bool, expected floating point"),
}


def test_good_reply_is_accepted():
    arrays, m = good_reply(n=4)
    m[P.NUM_EXAMPLES] = 4.0  # an integral float is an integer count
    r = P.validate_reply(1, arrays, m, EXPECTED)
    assert isinstance(r, Reply) and r.partition_id == 1 and r.num_examples == 4
    assert type(r.num_examples) is int and set(r.arrays) == {STATE, DC} and r.metrics == m


def test_mismatched_reply_is_rejected():
    """was: test_mismatched_reply_is_rejected (now checked by validate_reply)."""
    with pytest.raises(P.ReplyError, match=r"w: got \(1,\), expected \(2,\)"):
        P.validate_reply(0, {STATE: st(w=[1.0])}, metrics(0, 1), {STATE: {"w": (2,)}})


@pytest.mark.parametrize("fault", FAULTS)
def test_bad_reply_raises_reply_error_naming_the_fault(fault):
    change, message = FAULTS[fault]
    arrays, m = good_reply()
    change(arrays, m)
    with pytest.raises(P.ReplyError, match=message) as err:
        P.validate_reply(1, arrays, m, EXPECTED, who="client 1")
    assert str(err.value).startswith("client 1") and "\n" not in str(err.value)


class CannedTransport:
    """Clients answering with fixed replies (``answer(pid, payload)``: a RawReply, or a string =
    a transport failure's reason, or None = no reply); replies come back in reverse order."""

    def __init__(self, answer):
        self.answer = answer

    def exchange(self, server_round, payloads):
        raw, failures = {}, {}
        for pid in sorted(payloads, reverse=True):
            a = self.answer(pid, payloads[pid])
            if isinstance(a, str):
                failures[pid] = a
            elif a is not None:
                raw[pid] = a
        return raw, failures


def canned_loop(algo, answer, *, num_clients=4, max_failure_fraction=0.5, observer=None, checkpoints=None):
    events: list[dict] = []
    loop = RoundLoop(algo, CannedTransport(answer), loop_settings(num_clients, rounds=1,
                     max_failure_fraction=max_failure_fraction), log=events.append,
                     metrics_size=lambda: 0, observer=observer, checkpoints=checkpoints)
    return loop, events


def failed_events(events) -> dict[int, str]:
    return {e["client"]: e["error"] for e in events if e["event"] == "client_failed"}


@pytest.mark.parametrize("fault", FAULTS)
def test_bad_reply_in_the_loop_is_a_failed_client(fault):
    """A malformed reply from client 1 of 4 (SCAFFOLD: two records) is a failed client, logged with
    the reason; the round aggregates exactly what it aggregates when client 1 does not answer."""
    change, message = FAULTS[fault]
    x = {k: np.zeros(s, np.float32) for k, s in REPLY_SHAPES.items()}

    def answer(bad):
        def reply(pid, payload):
            arrays, m = good_reply(pid, n=pid + 1)
            if pid == 1:
                if bad is None:
                    return None
                bad(arrays, m)
            return RawReply(arrays, m)
        return reply

    loop, events = canned_loop(build_algorithm("scaffold", num_clients=4), answer(change))
    out = loop.run(x)
    reasons = failed_events(events)
    assert list(reasons) == [1] and reasons[1].startswith("invalid reply: client 1")
    assert re.search(message, reasons[1])
    (rnd,) = [e for e in events if e["event"] == "round"]
    assert rnd["clients"] == 3 and rnd["failed"] == 1
    ref_loop, ref_events = canned_loop(build_algorithm("scaffold", num_clients=4), answer(None))
    ref = ref_loop.run(x)
    assert failed_events(ref_events) == {1: "no reply"}
    assert_identical(out, ref)
    assert all(np.isfinite(v).all() for v in out.values())
    np.testing.assert_array_equal(loop.algo.c_global["w"], ref_loop.algo.c_global["w"])


def nan_clients(bad: set[int], n_of=lambda pid: pid + 1):
    """Client pid replies x + (pid + 1) with pid + 1 examples; the ``bad`` ones all-NaN."""
    def reply(pid, payload):
        x = payload.arrays[GLOBAL]
        y = {k: (np.full_like(v, np.nan) if pid in bad else v + pid + 1) for k, v in x.items()}
        return RawReply({STATE: y}, metrics(pid, n_of(pid)))
    return reply


def test_nan_reply_never_reaches_the_aggregate():
    x = {"w": np.zeros((2, 3), np.float32), "b": np.ones(3, np.float32)}
    seen = []
    loop, events = canned_loop(build_algorithm("fedavg"), nan_clients({2}),
                               observer=lambda r, g, reps: seen.append([p.partition_id for p in reps]) or {})
    out = loop.run(x)
    assert seen == [[0, 1, 3]]
    reasons = failed_events(events)
    assert list(reasons) == [2] and "state/w has 6 non-finite value(s)" in reasons[2]
    good = [{k: v + pid + 1 for k, v in x.items()} for pid in (0, 1, 3)]
    assert_identical(out, A.weighted_average(good, [1, 2, 4]))
    assert all(np.isfinite(v).all() for v in out.values())


# How client pid fails in test_round_fails_only_beyond_max_failure_fraction, and the reason logged.
FAILURE_KINDS = [("nan", "non-finite"), ("error", "RuntimeError: client crashed"), ("none", "no reply"),
                 ("flag", "client reported failure")]


def failing(bad: set[int]):
    """Client pid answers as `nan_clients`; the ``bad`` ones fail each its own way."""
    def answer(pid, payload):
        if pid not in bad:
            return nan_clients(set())(pid, payload)
        kind = FAILURE_KINDS[pid][0]
        if kind == "error":
            return "RuntimeError: client crashed"
        if kind == "none":
            return None
        raw = nan_clients({pid} if kind == "nan" else set())(pid, payload)
        raw.metrics[P.CLIENT_FAILED] = int(kind == "flag")
        return raw
    return answer


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5])
def test_round_fails_only_beyond_max_failure_fraction(fraction, tmp_path):
    x = {"w": np.zeros(2, np.float32)}
    for k in range(5):  # k of 4 clients fail (a NaN reply, a transport error, no reply, a flag)
        store = RecordingStore(tmp_path / f"{fraction}-{k}")
        loop, events = canned_loop(build_algorithm("fedavg"), failing(set(range(k))),
                                   max_failure_fraction=fraction, checkpoints=store)
        if k / 4 > fraction:
            with pytest.raises(RoundFailed, match=f"round 1: {k} of 4 clients failed .*{fraction}"):
                loop.run(x)
            assert store.saved == []
        else:
            out = loop.run(x)
            assert np.isfinite(out["w"]).all() and store.saved == [1]
        reasons = failed_events(events)
        assert sorted(reasons) == list(range(k))
        assert all(FAILURE_KINDS[pid][1] in reasons[pid] for pid in range(k))
    assert issubclass(RoundFailed, UserError)


def test_failed_clients_are_left_out_in_partition_order():
    """was: test_failed_clients_are_left_out_and_observer_sees_partition_order (round loop)."""
    seen = []
    clients = shift_clients((1, 1.0), (1, 1.0), (1, 1.0))  # y = x + 1, x + 2, x + 3
    clients[1].failed = 1
    loop, events = canned_loop(build_algorithm("fedavg"), lambda pid, payload: clients[pid](payload),
                               num_clients=3, observer=lambda r, g, reps: seen.append((r, g, reps)) or {})
    out = loop.run(st(w=[0.0]))
    np.testing.assert_allclose(out["w"], [2.0])  # mean of 1 and 3; client 1 left out
    (rnd, before, views), = seen
    assert rnd == 1 and before["w"].tolist() == [0.0]
    assert [v.partition_id for v in views] == [0, 2]  # partition order; the failed one is not there
    np.testing.assert_allclose(views[1].arrays[STATE]["w"], [3.0])
    assert failed_events(events) == {1: "client reported failure"}
    (r,) = [e for e in events if e["event"] == "round"]
    assert r["clients"] == 2 and r["failed"] == 1


def test_failed_clients_are_left_out_by_algorithm_strategy():
    """was: test_failed_clients_are_left_out_and_observer_sees_partition_order (Flower messages):
    a reply flagged client-failed, a malformed one and an error reply never reach the aggregate
    and are counted."""
    clients = shift_clients((1, 1.0), (1, 1.0), (1, 1.0), (1, 1.0), (1, 1.0))
    clients[1].failed = 1

    def broken(payload):
        raw = clients[3](payload)
        raw.arrays[STATE]["w"] = np.array([np.nan])
        return raw

    def crashing(payload):
        raise RuntimeError("boom")

    grid = grid_of([clients[0], clients[1], clients[2], broken, crashing])
    s = AlgorithmStrategy(build_algorithm("fedavg"))
    messages = list(s.configure_train(1, numpy_to_record(st(w=[0.0])), ConfigRecord(), grid))
    replies = grid.send_and_receive(messages)
    assert sum(m.has_error() for m in replies) == 1
    arrays, m = s.aggregate_train(1, replies[::-1])
    np.testing.assert_allclose(record_to_numpy(arrays)["w"], [2.0])  # mean of 1 and 3
    assert m[P.NUM_CLIENTS] == 2 and m[P.CLIENT_FAILED] == 3
    # nothing usable (flagged, malformed; the others never answered): no arrays, all counted
    useless = [r for r in replies if r.metadata.src_node_id in (NODE + 1, NODE + 3)]
    arrays, m = s.aggregate_train(1, useless)
    assert arrays is None and m[P.NUM_CLIENTS] == 0 and m[P.CLIENT_FAILED] == 5


# ---------------------------------------------------------------------------------------------
# (5) the wire codec and 0-d state entries

def test_numpy_to_record_keeps_0d_and_layout():
    state = {"s": np.array(2.5, np.float32), "t": np.arange(6.0).reshape(2, 3).T, "u": np.ones((0, 2))}
    assert np.ascontiguousarray(state["s"]).shape == (1,)  # the old codec's bug
    rec = numpy_to_record(state)
    assert [rec[k].shape for k in state] == [(), (3, 2), (0, 2)]
    back = record_to_numpy(rec)
    assert_identical(back, state)


def scalar_payload() -> Payload:
    algo = build_algorithm("scaffold")
    x = {"s": np.array(0.5, np.float32), "w": np.ones((2, 2), np.float32)}
    algo.init(x)
    payload = algo.configure(1, 0, x)
    payload.config.update({P.LR: 0.1, P.LOCAL_STEPS: 2, P.SERVER_ROUND: 1})
    return payload


def test_payload_and_reply_with_0d_entry_round_trip_through_protobuf():
    payload = scalar_payload()
    msg = wire(Message(encode_payload(payload), dst_node_id=NODE, message_type=MessageType.TRAIN))
    got = decode_payload(msg.content)
    assert got.config == payload.config and set(got.arrays) == {GLOBAL, C_GLOBAL}
    for g in payload.arrays:
        assert_identical(got.arrays[g], payload.arrays[g])
    assert got.arrays[GLOBAL]["s"].shape == () and got.arrays[C_GLOBAL]["s"].shape == ()
    arrays = {STATE: {k: v + 1 for k, v in got.arrays[GLOBAL].items()},
              DC: {k: v - 1 for k, v in got.arrays[C_GLOBAL].items()}}
    back = wire(Message(encode_reply(arrays, metrics(0, 3)), reply_to=msg))
    groups = decode_groups(back.content)
    expected = build_algorithm("scaffold").expected(1, 0, payload.arrays[GLOBAL])
    r = P.validate_reply(0, groups, decode_metrics(back.content), expected)
    assert r.arrays[STATE]["s"].shape == () and r.arrays[DC]["s"].shape == ()
    assert r.arrays[STATE]["s"] == np.float32(1.5)


SCALAR_SHAPES = {"s": (), "w": (2, 3)}


def test_scaffold_with_0d_entry_end_to_end(tmp_path):
    """SCAFFOLD over a state with a 0-d key, through the wire both ways: in our loop (checkpoints
    and the clients' c_i on disk, killed in round 2 and resumed) and in Flower's Strategy.start."""
    final, events, _, algo, clients = run_loop("scaffold", tmp_path / "ref", shapes=SCALAR_SHAPES)
    assert rounds_logged(events) == [1, 2] and not failed_events(events)
    assert final["s"].shape == () and algo.c_global["s"].shape == () and np.isfinite(final["s"])
    assert clients.store.load(SYSTEM, 0, 3)[C_LOCAL]["s"].shape == ()
    with pytest.raises(Crash):
        run_loop("scaffold", tmp_path / "resumed", shapes=SCALAR_SHAPES, crash_in_round=2)
    resumed, events, _, algo, _ = run_loop("scaffold", tmp_path / "resumed", shapes=SCALAR_SHAPES)
    assert rounds_logged(events) == [2] and not failed_events(events) and algo.c_global["s"].shape == ()
    assert_identical(resumed, final)
    out, _ = flower_start("scaffold", tmp_path, shapes=SCALAR_SHAPES)
    assert_identical(out, final)


def test_checkpoint_keeps_0d_entries(tmp_path):
    store = CheckpointStore(tmp_path)
    state = {"s": np.array(0.5, np.float32)}
    store.save(SYSTEM, RoundCheckpoint(1, state, {"arrays": {C_GLOBAL: dict(state)}, "values": {}}))
    ckpt = store.latest(SYSTEM)
    assert ckpt.global_state["s"].shape == () and ckpt.algorithm["arrays"][C_GLOBAL]["s"].shape == ()


def test_client_store_keeps_0d_entries(tmp_path):
    store = ClientStore(tmp_path)
    store.save(SYSTEM, 0, 1, {C_LOCAL: {"s": np.array(0.5, np.float32)}})
    assert store.load(SYSTEM, 0, 2)[C_LOCAL]["s"].shape == ()


# ---------------------------------------------------------------------------------------------
# (6) build_algorithm errors

@pytest.mark.parametrize("name,options,message", [
    ("fedavgg", None, r"unknown strategy 'fedavgg'\. Did you mean 'fedavg'"),
    ("fedprox", {"mu": 0.1}, r"unknown option 'mu' for strategy 'fedprox'; valid options: proximal_mu"),
    ("fedprox", {"proximal_mux": 0.1}, r"'proximal_mux' \(did you mean 'proximal_mu'\?\)"),
    # was "common strategy option": there are no common options any more
    ("fedavg", {"server_rounds": 3},
     r"unknown option 'server_rounds' for strategy 'fedavg'; valid options: \(none\)"),
    ("fedprox", {"proximal_mu": "high"},
     r"strategy 'fedprox' option 'proximal_mu' must be float, got str 'high'"),
    ("krum", {"num_malicious_nodes": 1.5}, r"option 'num_malicious_nodes' must be int, got float 1\.5"),
    ("fedavgm", {"server_momentum": True}, r"option 'server_momentum' must be float, got bool True"),
    ("fedprox", {"proximal_mu": math.nan}, r"option 'proximal_mu' must be a finite number, got nan"),
    ("fedadam", {"v_init": math.inf}, r"option 'v_init' must be a finite number, got inf"),
    ("fedprox", {"proximal_mu": -1.0}, r"strategy 'fedprox': proximal_mu must be >= 0, got -1\.0"),
    ("fedtrimmedavg", {"beta": 0.7}, r"strategy 'fedtrimmedavg': beta must be in \[0, 0\.5\), got 0\.7"),
    ("fedavgm", {"server_momentum": 1.0}, r"0 <= server_momentum < 1, got 1\.0, 1\.0"),
    ("fedyogi", {"tau": 0.0}, r"need eta > 0, tau > 0"),
    ("fedadam", {"v_init": -1.0}, r"v_init must be >= 0"),
    ("scaffold", {"control": "option1"}, r"control must be one of option2, gradient, got 'option1'"),
    ("scaffold", {"num_clients": 0}, r"num_clients must be a positive integer, got 0"),
    ("multikrum", {"num_nodes_to_select": 0}, r"num_nodes_to_select >= 1"),
    ("bulyan", {"num_malicious_nodes": -1}, r"num_malicious_nodes must be >= 0, got -1"),
])
def test_build_algorithm_errors(name, options, message):
    """was: test_build_strategy_errors."""
    with pytest.raises(UserError, match=message) as err:
        build_algorithm(name, options)
    assert "\n" not in str(err.value)
