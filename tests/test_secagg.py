"""Secure aggregation (``federated.secagg``): Flower's SecAgg+ gives FedAvg's mean within its quantization.

`SecAggTransport` (server/secagg.py) runs Flower's SecAgg+ workflow over `InProcessGrid`, whose
clients run Flower's ``secaggplus_mod`` around a train handler (clients/secagg.py): a fake one
returning fixed random states, and the project's real ClientApp on the tiny model. The reference is
plain FedAvg over `GridTransport` on the same payloads and clients.

Tolerance. Client i holds a value x_i (every value alike) and n_i examples; W = max_weight,
T = quantization range, c = clipping range, K clients. Flower's mod weighs the client by
d_i = round(n_i T / W) / T (so |d_i - n_i / W| <= 1 / (2T)) and sends
q_i = SR((d_i x_i + c) T / (2c)) = (d_i x_i + c) T / (2c) + e_i with |e_i| < 1 (SR: stochastic
rounding; no clipping, since |d_i x_i| <= c, which the client checks). Flower's grid step is
2c / T, not 2c / (T - 1): it maps [-c, c] onto the integers 0..T. The masks cancel exactly
(mod 2^32; K (T + 1) < 2^32, so the sum S = sum q_i does not wrap), and the unmask stage returns
r = (S 2c / T - c - (K - 1) c) / D with D = sum d_i, i.e. r = sum d_i x_i / D + (2c / T) sum e_i / D:
    |r - sum d_i x_i / D| < K 2c / (T D).
The weights: with w_i = n_i / W and peak = max |x_i|,
    |sum d_i x_i / D - sum w_i x_i / sum w_i| <= (K peak / (2T) + peak K / (2T)) / D = K peak / (T D).
So |r - FedAvg| < K (2c + peak) / (T D), plus float32 rounding of both means (eps x peak).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

import clients.app as client_app
from clients.secagg import is_secagg_stage, secagg_train
from fedmllm.config import dumps, load_config
from fedmllm.errors import UserError
from fedmllm.experiment import ExperimentData
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import Payload, build_algorithm
from fedmllm.federated.algorithms.base import GLOBAL, STATE
from fedmllm.federated.experiment import loop_settings, resolve_strategy_options
from fedmllm.federated.rounds import round_payloads, validated_replies
from fedmllm.federated.runtime import build_partition
from fedmllm.federated.sequential import initial_global_state
from fedmllm.runs import atomic_write, write_json
from server.inprocess import InProcessGrid
from server.records import decode_payload, encode_groups
from server.secagg import SecAggTransport
from server.strategy import GridTransport
from simulations.federated import check_federated, run_federated

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py

SIZES = [5, 17, 40, 9]  # unequal: the example weights matter
SCALE = 0.25  # the fake clients' states lie within [-2, 2]: inside every clipping range below
FAKE = ClientApp()
DIE: dict[int, str] = {}  # partition -> the SecAgg+ stage in which it drops out


@FAKE.query()
def _query(msg: Message, context) -> Message:
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({P.METRICS: MetricRecord({P.PARTITION_ID: pid})}), reply_to=msg)


@FAKE.train()
def _train(msg: Message, context) -> Message:
    """A fixed random state per partition (received + noise); drops out in the SecAgg+ stage
    `DIE` names for its partition (the training itself runs in the collect-masked-vectors stage)."""
    pid = int(context.node_config["partition-id"])
    if is_secagg_stage(msg):
        if DIE.get(pid) == msg.content.config_records[RECORD_KEY_CONFIGS]["stage"]:
            raise RuntimeError(f"client {pid} drops out")
        return secagg_train(msg, context, _train)
    payload = decode_payload(msg.content)
    if DIE.get(pid) == "collect_masked_vectors":  # under plain FedAvg: fails to train
        raise RuntimeError(f"client {pid} drops out")
    rng = np.random.default_rng(100 + pid)
    state = {k: (v + rng.normal(0, SCALE, v.shape)).astype(np.float32) for k, v in payload.arrays[GLOBAL].items()}
    content = encode_groups({STATE: state})
    content[P.METRICS] = MetricRecord({P.NUM_EXAMPLES: SIZES[pid], P.TRAIN_LOSS: 0.5 + pid, P.PARTITION_ID: pid})
    return Message(content, reply_to=msg)


def tolerance(weights, max_weight: float, clip: float, levels: int, peak: float) -> float:
    """The bound of the module docstring: K (2c + peak) / (T D) + float32 rounding."""
    d = sum(round(n / max_weight * levels) / levels for n in weights)
    return len(weights) * (2 * clip + peak) / (levels * d) + float(np.finfo(np.float32).eps) * peak


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max()) for k in a)


def both(app, payloads: dict, state: dict, num_nodes: int, **secagg):
    """(FedAvg of the plain replies, their peak |value|, the plain replies, secure (reply, failures))
    of one round on the same payloads, each transport on its own fresh nodes."""
    algo = build_algorithm("fedavg", {}, num_clients=num_nodes)
    clients = sorted(payloads)
    raw, failures = GridTransport(InProcessGrid(app, num_nodes)).exchange(1, payloads)
    replies = validated_replies(algo, 1, state, clients, raw, failures)
    peak = max(float(np.abs(v).max()) for r in replies for v in r.arrays[STATE].values())
    expected = {pid: algo.expected(1, pid, state) for pid in clients}
    secure = SecAggTransport(InProcessGrid(app, num_nodes), **secagg).secure_exchange(1, payloads, expected)
    return algo.aggregate(1, state, replies), peak, replies, secure


@pytest.fixture(scope="module")
def x0():
    rng = np.random.default_rng(0)  # a matrix, a vector and a 0-d value (Flower's unmask mishandles 0-d)
    return {"a": (SCALE * rng.normal(size=(3, 4))).astype(np.float32),
            "b": (SCALE * rng.normal(size=(7,))).astype(np.float32), "c": np.array(0.3 * SCALE, np.float32)}


def fake_payloads(x0, config=None) -> dict:
    """Each client's FedAvg payload of round 1 (``config``: extra config values)."""
    algo = build_algorithm("fedavg", {}, num_clients=len(SIZES))
    return {pid: Payload(algo.configure(1, pid, x0).arrays, dict(config or {})) for pid in range(len(SIZES))}


@pytest.mark.parametrize("clip, levels", [(8.0, 2 ** 22), (2.0, 2 ** 12)])
def test_secagg_mean_is_fedavg_within_the_quantization_error(x0, clip, levels):
    fedavg, peak, replies, (reply, failures) = both(FAKE, fake_payloads(x0), x0, len(SIZES), clipping_range=clip,
                                                     quantization_range=levels, max_weight=max(SIZES))
    assert failures == {} and reply.partition_id == -1
    secure = build_algorithm("fedavg", {}).aggregate(1, x0, [reply])
    assert {k: (v.shape, v.dtype) for k, v in secure.items()} == {k: (v.shape, v.dtype) for k, v in x0.items()}
    tol = tolerance(SIZES, max(SIZES), clip, levels, peak)
    err = max_diff(secure, fedavg)
    assert err <= tol
    if levels == 2 ** 12:  # a coarse grid: the error is the quantization's, not zero
        assert err > tol / 100
    assert reply.num_examples == sum(SIZES) and reply.metrics[P.NUM_CLIENTS] == len(SIZES)
    plain = P.reduce_metrics([r.metrics for r in replies], [r.num_examples for r in replies])
    assert reply.metrics[P.TRAIN_LOSS] == pytest.approx(plain[P.TRAIN_LOSS])
    assert reply.metrics[P.BYTES_OUT] > sum(r.arrays[STATE]["a"].nbytes for r in replies)  # keys, shares, masks


def test_a_secagg_round_is_reproducible(x0):
    """The masks cancel exactly and the stochastic rounding is seeded by (experiment, system, round,
    partition): the same round twice gives the same aggregate to the bit (a resumed run repeats it),
    and leaves numpy's global RNG as it was."""
    algo = build_algorithm("fedavg", {}, num_clients=len(SIZES))
    expected = {pid: algo.expected(1, pid, x0) for pid in range(len(SIZES))}
    before = np.random.get_state()[1].copy()
    a, b = (SecAggTransport(InProcessGrid(FAKE, len(SIZES)), max_weight=max(SIZES)).secure_exchange(
        1, fake_payloads(x0), expected)[0] for _ in range(2))
    assert max_diff(a.arrays[STATE], b.arrays[STATE]) == 0.0
    assert (np.random.get_state()[1] == before).all()


@pytest.mark.parametrize("stage", ["setup", "share_keys", "collect_masked_vectors", "unmask"])
def test_a_dropout_mid_protocol_is_tolerated_within_the_reconstruction_threshold(x0, stage, monkeypatch):
    """Client 2 dies in one stage; threshold round(0.67 x 4) = 3 of 4 shares. Before it uploads its
    masked vector (setup, share keys, collect: its pairwise masks rebuilt from the others' shares)
    the round's mean is the other three's; dying in the unmask stage, its update is in the sum and
    the others' shares suffice. Two dropouts leave 2 < 3 shares: no aggregate, every client failed."""
    monkeypatch.setitem(DIE, 2, stage)
    _, peak, replies, (reply, failures) = both(FAKE, fake_payloads(x0), x0, len(SIZES), max_weight=max(SIZES))
    kept = [r for r in replies if stage == "unmask" or r.partition_id != 2]  # plain FedAvg of the same clients
    fedavg = build_algorithm("fedavg", {}).aggregate(1, x0, kept)
    survivors = [r.num_examples for r in kept]
    if stage == "unmask":
        assert failures == {}
    else:
        assert list(failures) == [2] and stage.replace("_", " ") in failures[2] and "drops out" in failures[2]
    assert reply.metrics[P.NUM_CLIENTS] == len(survivors) and reply.num_examples == sum(survivors)
    secure = build_algorithm("fedavg", {}).aggregate(1, x0, [reply])
    assert max_diff(secure, fedavg) <= tolerance(survivors, max(SIZES), 8.0, 2 ** 22, peak)

    monkeypatch.setitem(DIE, 3, stage)
    algo = build_algorithm("fedavg", {}, num_clients=len(SIZES))
    expected = {pid: algo.expected(1, pid, x0) for pid in range(len(SIZES))}
    transport = SecAggTransport(InProcessGrid(FAKE, len(SIZES)), max_weight=max(SIZES))
    reply, failures = transport.secure_exchange(1, fake_payloads(x0), expected)
    assert reply is None and sorted(failures) == [0, 1, 2, 3]
    assert all("stopped in stage" in failures[pid] for pid in (0, 1))


def test_a_client_refuses_what_the_sum_would_clip(x0):
    algo = build_algorithm("fedavg", {}, num_clients=len(SIZES))
    expected = {pid: algo.expected(1, pid, x0) for pid in range(len(SIZES))}
    transport = SecAggTransport(InProcessGrid(FAKE, len(SIZES)), max_weight=max(SIZES), clipping_range=0.01)
    reply, failures = transport.secure_exchange(1, fake_payloads(x0), expected)
    assert reply is None and "federated.secagg_clipping_range" in failures[2]
    transport = SecAggTransport(InProcessGrid(FAKE, len(SIZES)), max_weight=20)
    reply, failures = transport.secure_exchange(1, fake_payloads(x0), expected)
    assert list(failures) == [2] and "40 examples exceed federated.secagg_max_weight = 20" in failures[2]


def test_user_level_dp_payloads_weigh_every_client_one(x0):
    """With a DP clipping norm in the payload the mean is uniform (fedmllm.federated.privacy)."""
    payloads = fake_payloads(x0, {P.DP_CLIP: 1.0})
    _, peak, replies, (reply, _) = both(FAKE, payloads, x0, len(SIZES), max_weight=max(SIZES))
    assert reply.num_examples == reply.metrics[P.NUM_CLIENTS] == len(SIZES)
    uniform = {k: np.mean([r.arrays[STATE][k] for r in replies], axis=0) for k in x0}
    assert max_diff(reply.arrays[STATE], uniform) <= tolerance([1] * len(SIZES), 1, 8.0, 2 ** 22, peak)


# --- the real ClientApp on the tiny model ---------------------------------------------------------

TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=2", "federated.rounds=1",
        "federated.local_steps=2", "federated.upstream_n=2", "federated.baselines=[]"]


def test_real_clients_secagg_round_is_their_fedavg_round(tmp_path):
    """Both transports send the same payloads to the project's ClientApp; the clients train alike
    (same seeds: the reduced train loss is identical), SecAgg+'s mean is their FedAvg's."""
    cfg = resolve_strategy_options(load_config(None, TINY))
    atomic_write(tmp_path / "config.toml", dumps(cfg))
    partition = build_partition(cfg, ExperimentData.load(cfg, parts=("train",)))
    write_json(tmp_path / "partition.json", partition.to_json())
    write_json(tmp_path / "meta.json", {"kind": "federated"})  # clients serve federated run dirs only
    x0 = initial_global_state(cfg)
    settings = loop_settings(cfg, "fedavg", tmp_path, partition)
    algo = build_algorithm("fedavg", {}, num_clients=2)
    config = {**settings.common_config, P.SERVER_ROUND: 1, P.LR: settings.lr(1), P.ALGORITHM: "fedavg",
              P.SYSTEM: "fedavg"}
    payloads = round_payloads(algo, 1, x0, [0, 1], config, settings.client_config)
    sizes = partition.sizes()
    fedavg, peak, replies, (reply, failures) = both(client_app.app, payloads, x0, 2, max_weight=max(sizes))
    assert failures == {} and [r.num_examples for r in replies] == sizes and reply.num_examples == sum(sizes)
    plain = P.reduce_metrics([r.metrics for r in replies], [r.num_examples for r in replies])
    assert reply.metrics[P.TRAIN_LOSS] == plain[P.TRAIN_LOSS]  # the same training, to the bit
    secure = algo.aggregate(1, x0, [reply])
    assert max_diff(secure, fedavg) <= tolerance(sizes, max(sizes), 8.0, 2 ** 22, peak)
    assert max_diff(fedavg, x0) > 1e-4  # training moved the adapter


def test_a_refused_instruction_is_a_dropout(x0, tmp_path):
    """The real ClientApp's node policy refuses a run directory that is not one: under SecAgg+ the
    refusal comes in the collect-masked-vectors stage and the client drops out with its reason."""
    algo = build_algorithm("fedavg", {}, num_clients=2)
    config = {P.EXPERIMENT_DIR: str(tmp_path), P.EXPERIMENT_ID: "0", P.SERVER_ROUND: 1, P.SYSTEM: "fedavg",
              P.ALGORITHM: "fedavg", P.LR: 0.1, P.LOCAL_STEPS: 1}
    payloads = {pid: Payload(algo.configure(1, pid, x0).arrays, config) for pid in (0, 1)}
    expected = {pid: algo.expected(1, pid, x0) for pid in (0, 1)}
    reply, failures = SecAggTransport(InProcessGrid(client_app.app, 2)).secure_exchange(1, payloads, expected)
    assert reply is None and all("collect masked vectors" in failures[pid] and "not a fedmllm run directory"
                                 in failures[pid] for pid in (0, 1))


def test_a_secagg_run_switches_the_instrument_off_with_one_notice(tmp_path):
    cfg = load_config(None, [*TINY, "federated.backend=inprocess", "federated.secagg=true"])
    out = run_federated(cfg, str(tmp_path / "run"))
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    notices = [e for e in events if e["event"] == "notice"]
    assert len(notices) == 1 and "secagg" in notices[0]["message"]
    rounds = [e for e in events if e["event"] == "round"]
    assert [(e["round"], e["clients"], e["failed"]) for e in rounds] == [(1, 2, 0)]
    assert "drift" not in rounds[0] and not any(e["event"] == "client_train" for e in events)
    assert (out / "results.json").is_file()


@pytest.mark.parametrize("overrides, message", [
    (["federated.strategies=[\"scaffold\"]"], "valid with secagg: fedavg"),
    (["federated.max_update_norm=1.0"], "federated.max_update_norm must be 0 with federated.secagg"),
    (["privacy.mode=server-fixed"], "client-fixed"),
    (["federated.clients_per_round=1"], "at least 2 clients per round"),
])
def test_check_federated_refuses_what_secagg_hides(overrides, message):
    with pytest.raises(UserError) as e:
        check_federated(load_config(None, [*TINY, "federated.secagg=true", *overrides]))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override, message", [
    ("federated.secagg_num_shares=0", "'federated.secagg_num_shares' must be in (0, 1]"),
    ("federated.secagg_reconstruction_threshold=1.5", "'federated.secagg_reconstruction_threshold' must be in"),
    ("federated.secagg_clipping_range=0", "'federated.secagg_clipping_range' must be > 0"),
    ("federated.secagg_max_weight=-1", "'federated.secagg_max_weight' must be >= 0"),
    ("federated.secagg_quantization_range=2147483648", "'federated.secagg_quantization_range' must be in"),
])
def test_bad_secagg_values(override, message):
    with pytest.raises(UserError) as e:
        load_config(None, [*TINY, "federated.secagg=true", override])
    assert message in str(e.value)
