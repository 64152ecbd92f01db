"""User-level DP (fedmllm/federated/privacy.py): random numpy states and hand-built replies, no Ray,
no model. Clipping equals Flower's; the bound holds on what reaches the inner aggregate; the noise
has the configured std; the adaptive clipping norm follows Andrew et al.'s rule; epsilon in a
RoundLoop's round events equals dp-accounting's; a resumed run keeps the clipping norm and noise;
what cannot be made private is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, NeighboringRelation, SampledWithoutReplacementDpEvent
from dp_accounting.rdp import RdpAccountant
from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping
from flwr.serverapp.strategy import FedAvg as FlwrFedAvg
from flwr.supercore.differential_privacy import (
    compute_adaptive_noise_params, compute_clip_model_update, get_norm)

from fedmllm.config import Config
from fedmllm.errors import UserError
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import GLOBAL, STATE, Reply, build_algorithm
from fedmllm.federated.algorithms.fedavg import FedAvg
from fedmllm.federated.attacks.base import delta, norm
from fedmllm.federated.checkpoint import CheckpointStore
from fedmllm.federated.privacy import (
    COUNT_STREAM, NOISE_STREAM, PrivateAlgorithm, adaptive_noise, clip_update, epsilon, noise_rng, private)
from fedmllm.federated.rounds import LoopSettings, RawReply, RoundLoop

SHAPES = {"a": (6, 5), "b": (7,), "c": (2, 3)}


def state(seed, shapes=SHAPES, dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.normal(size=s)).astype(dtype) for k, s in shapes.items()}


def moved(x, seed, length):
    """x plus an update of L2 norm ``length`` (all keys as one vector) in a random direction."""
    u = state(seed, {k: v.shape for k, v in x.items()})
    scale = length / norm(u)
    return {k: (x[k].astype(np.float64) + scale * u[k]).astype(x[k].dtype) for k in x}


def metrics(pid, n):
    return {P.NUM_EXAMPLES: n, P.TRAIN_LOSS: 1.0, P.PARTITION_ID: pid, P.CLIENT_FAILED: 0}


def reply(pid, st, n=3):
    return Reply(pid, n, {STATE: st}, metrics(pid, n))


class Spy(FedAvg):
    """FedAvg that keeps the replies it aggregated."""

    def aggregate(self, server_round, global_state, replies):
        self.seen = list(replies)
        return super().aggregate(server_round, global_state, replies)


def wrap(mode="server-fixed", z=0.0, C=1.0, inner=None, num_clients=5, **kw):
    return PrivateAlgorithm(inner or Spy(num_clients=num_clients), mode=mode, noise_multiplier=z,
                            clipping_norm=C, **kw)


# ---------------------------------------------------------------------------------------------
# clipping


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("C", [0.3, 100.0])
def test_clip_update_equals_flowers_compute_clip_model_update(dtype, C):
    x = state(1, dtype=dtype)
    y = moved(x, 2, 2.0)
    ours, length = clip_update(y, x, C)
    theirs = [y[k].copy() for k in SHAPES]
    compute_clip_model_update(theirs, [x[k] for k in SHAPES], C)
    tol = {"rtol": 1e-12} if dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-6}
    for k, t in zip(SHAPES, theirs):
        assert ours[k].dtype == dtype and ours[k].shape == y[k].shape
        np.testing.assert_allclose(ours[k], t, **tol)
    assert length == pytest.approx(get_norm([y[k] - x[k] for k in SHAPES]), rel=1e-6)
    assert norm(delta(ours, x)) <= min(C, length) * (1 + 1e-6)
    if C > length:
        assert all(ours[k] is y[k] or np.array_equal(ours[k], y[k]) for k in y)  # no-op, bit for bit


def test_clip_update_counts_keys_not_received_from_zero():
    """A key the client did not receive, or of another shape, counts from 0 (as attacks.base.delta)."""
    x = state(3)
    y = {**moved(x, 4, 1.0), "new": np.full(4, 2.0)}
    received = {**x, "c": np.zeros((3, 2))}  # 'c' of another shape: from 0 too
    ours, length = clip_update(y, received, 0.5)
    base = {**x, "c": np.zeros((2, 3)), "new": np.zeros(4)}
    theirs = [y[k].copy() for k in y]
    compute_clip_model_update(theirs, [base[k] for k in y], 0.5)
    for k, t in zip(y, theirs):
        np.testing.assert_allclose(ours[k], t, rtol=1e-12)
    assert length == pytest.approx(norm(delta(y, base)))


@pytest.mark.parametrize("mode", ["server-fixed", "server-adaptive"])
def test_server_modes_clip_every_update_and_weigh_clients_uniformly(mode):
    x = state(0)
    lengths, counts = [0.2, 0.8, 1.5, 4.0], [1, 5, 2, 9]
    replies = [reply(pid, moved(x, 10 + pid, L), n) for pid, (L, n) in enumerate(zip(lengths, counts))]
    algo = wrap(mode, C=1.0)
    out = algo.aggregate(1, x, replies)
    seen = algo.inner.seen
    assert [r.num_examples for r in seen] == [1, 1, 1, 1]
    for r, orig, L in zip(seen, replies, lengths):
        d = delta(r.arrays[STATE], x)
        assert norm(d) == pytest.approx(min(L, 1.0), rel=1e-9)
        if L <= 1.0:  # unclipped: unchanged; clipped: the same direction
            assert all(np.array_equal(r.arrays[STATE][k], orig.arrays[STATE][k]) for k in x)
        else:
            d0 = delta(orig.arrays[STATE], x)
            for k in x:
                np.testing.assert_allclose(d[k], d0[k] / L, rtol=1e-9, atol=1e-12)
    for k in x:  # z = 0: exactly the uniform mean of the clipped states
        np.testing.assert_allclose(out[k], np.mean([r.arrays[STATE][k] for r in seen], axis=0), rtol=1e-12)
    info = algo.round_info()
    assert info["dp_clipping_norm"] == 1.0 and info["dp_noise_std"] == 0.0
    assert "dp_clip_violations" not in info


@pytest.mark.parametrize("mode", ["client-fixed", "client-adaptive"])
def test_client_modes_send_the_norm_count_violations_and_clip_anyway(mode):
    """Clients clip as client.py does (clip_update against what they received, with DP_CLIP); the
    server counts 0 violations on float32 states; one client that does not clip is counted and
    re-clipped."""
    C = 0.7
    x = state(0, dtype=np.float32, scale=3.0)
    lengths = [0.5, 2.0, 5.0, 9.0]

    def round_replies(algo, honest):
        out = []
        for pid, L in enumerate(lengths):
            payload = algo.configure(1, pid, x)
            assert payload.config[P.DP_CLIP] == C
            trained = moved(payload.arrays[GLOBAL], 20 + pid, L)
            if pid in honest:
                trained = clip_update(trained, payload.arrays[GLOBAL], float(payload.config[P.DP_CLIP]))[0]
            out.append(reply(pid, trained))
        return out

    algo = wrap(mode, C=C, num_clients=4)
    algo.aggregate(1, x, round_replies(algo, honest={0, 1, 2, 3}))
    info = algo.round_info()
    assert info["dp_clip_violations"] == 0
    if mode == "client-adaptive":  # z = 0: no count noise; only the 0.5 update was not clipped
        assert info["dp_unclipped_fraction"] == 0.25

    algo = wrap(mode, C=C, num_clients=4)
    algo.aggregate(1, x, round_replies(algo, honest={0, 1, 3}))
    assert algo.round_info()["dp_clip_violations"] == 1
    for r in algo.inner.seen:
        assert norm(delta(r.arrays[STATE], x)) <= C * (1 + 1e-5)


# ---------------------------------------------------------------------------------------------
# noise


@pytest.mark.parametrize("mode", ["server-fixed", "server-adaptive"])
def test_noise_has_the_configured_std_on_the_shared_keys_only(mode):
    z, C, sigma_b = 1.3, 0.4, 1.0
    big = {"w": (150, 200), "v": (2000,)}
    x = {**state(0, big), "frozen": np.arange(10.0)}  # no client shares 'frozen'
    replies = [reply(pid, moved({k: x[k] for k in big}, 30 + pid, 0.2 + pid)) for pid in range(4)]
    kw = {"clipped_count_stddev": sigma_b} if mode == "server-adaptive" else {}
    noiseless = wrap(mode, 0.0, C, seed=9, **kw).aggregate(1, x, replies)
    algo = wrap(mode, z, C, seed=9, **kw)
    noisy = algo.aggregate(1, x, replies)
    z_eff = (z ** -2 - (2 * sigma_b) ** -2) ** -0.5 if mode == "server-adaptive" else z
    std = z_eff * C / len(replies)  # Flower's compute_stdv
    diff = np.concatenate([(noisy[k] - noiseless[k]).ravel() for k in big])
    n = diff.size
    assert abs(diff.std() / std - 1) < 4 / math.sqrt(2 * n)
    assert abs(diff.mean()) < 4 * std / math.sqrt(n)
    assert np.array_equal(noisy["frozen"], x["frozen"])
    info = algo.round_info()
    assert info["dp_noise_std"] == pytest.approx(std) and info["dp_noise_multiplier"] == pytest.approx(z_eff)
    # the noise is a function of (seed, round): the same again, another round or seed differs
    again = wrap(mode, z, C, seed=9, **kw).aggregate(1, x, replies)
    assert all(np.array_equal(again[k], noisy[k]) for k in x)
    assert not np.array_equal(wrap(mode, z, C, seed=9, **kw).aggregate(2, x, replies)["w"], noisy["w"])
    assert not np.array_equal(wrap(mode, z, C, seed=8, **kw).aggregate(1, x, replies)["w"], noisy["w"])


# ---------------------------------------------------------------------------------------------
# adaptive clipping


def test_adaptive_clipping_norm_follows_the_geometric_rule():
    """C <- C exp(-clip_lr (b/m - target)) (Andrew et al. 2021, Alg. 1) equals Flower's
    ``_geometric_update`` given the same fraction. (Flower feeds it the *clipped* fraction with a
    "target clipped quantile"; we, as the paper, feed the unclipped fraction b/m.)"""
    x = state(0)
    lengths = [0.1, 0.5, 0.9, 1.5, 3.0]  # b = 3 of m = 5 within C = 1
    replies = [reply(pid, moved(x, 40 + pid, L)) for pid, L in enumerate(lengths)]
    algo = wrap("server-adaptive", 0.0, 1.0, target_quantile=0.5, clip_lr=0.2)
    algo.aggregate(1, x, replies)
    flwr = DifferentialPrivacyServerSideAdaptiveClipping(
        FlwrFedAvg(), noise_multiplier=0.0, num_sampled_clients=5, initial_clipping_norm=1.0,
        target_clipped_quantile=0.5, clip_norm_lr=0.2)
    flwr._geometric_update(3 / 5)
    assert algo.clipping_norm == pytest.approx(math.exp(-0.2 * (0.6 - 0.5)), rel=1e-12)
    assert algo.clipping_norm == pytest.approx(flwr.clipping_norm, rel=1e-12)
    assert algo.round_info()["dp_unclipped_fraction"] == 0.6

    # the count is noised with sigma_b from its own stream; round 2 clips with the new C
    algo = wrap("server-adaptive", 1.0, 1.0, seed=3, clipped_count_stddev=2.0)
    algo.aggregate(1, x, replies)
    count = 3 + noise_rng(3, 1, COUNT_STREAM).normal(0.0, 2.0)
    c1 = math.exp(-0.2 * (count / 5 - 0.5))
    assert algo.clipping_norm == pytest.approx(c1, rel=1e-12)
    assert algo.round_info()["dp_unclipped_fraction"] == pytest.approx(count / 5)
    algo.aggregate(2, x, replies)
    assert algo.round_info()["dp_clipping_norm"] == pytest.approx(c1, rel=1e-12)


@pytest.mark.parametrize("z, m, sigma_b", [(1.0, 100, None), (0.5, 20, 2.0), (3.0, 7, 1.6), (0.0, 10, None)])
def test_adaptive_noise_equals_flowers(z, m, sigma_b):
    assert adaptive_noise(z, m, sigma_b) == pytest.approx(compute_adaptive_noise_params(z, m, sigma_b), rel=1e-12)


def test_adaptive_noise_refuses_an_undefined_z_delta():
    with pytest.raises(ValueError):
        compute_adaptive_noise_params(1.0, 4, None)
    with pytest.raises(UserError, match=r"clipped_count_stddev above 0.5.*more than 10 clients"):
        adaptive_noise(1.0, 4, None)
    with pytest.raises(UserError, match="count noise std"):
        wrap("client-adaptive", 1.0, num_clients=4)


# ---------------------------------------------------------------------------------------------
# the round loop: epsilon in the round events, resume


def answer(pid, payload):
    """A canned client: an update of norm 0.3 + 0.4 pid in a direction fixed by (pid, round)."""
    x = payload.arrays[GLOBAL]
    return RawReply({STATE: moved(x, 100 * payload.config[P.SERVER_ROUND] + pid, 0.3 + 0.4 * pid)}, metrics(pid, 2))


class CannedTransport:
    def exchange(self, server_round, payloads):
        return {pid: answer(pid, p) for pid, p in payloads.items()}, {}


def dp_cfg(mode="server-fixed", N=5, per_round=0, **privacy) -> Config:
    cfg = Config()
    cfg.seed, cfg.federated.num_clients, cfg.federated.clients_per_round = 11, N, per_round
    cfg.privacy.mode, cfg.privacy.clipping_norm = mode, 0.5
    for k, v in privacy.items():
        setattr(cfg.privacy, k, v)
    return cfg


def run(cfg, z, rounds, transport=None, checkpoints=None):
    algo = private(build_algorithm("fedavg", num_clients=cfg.federated.num_clients), cfg, z)
    events: list[dict] = []
    settings = LoopSettings(system=f"fedavg+dp{z:g}", rounds=rounds, num_clients=cfg.federated.num_clients,
                            clients_per_round=cfg.federated.clients_per_round, seed=cfg.seed, local_steps=1,
                            base_lr=0.1)
    loop = RoundLoop(algo, transport or CannedTransport(), settings, log=events.append, metrics_size=lambda: 0,
                     checkpoints=checkpoints)
    final = loop.run(state(0, dtype=np.float32))
    return final, [e for e in events if e["event"] == "round"], algo


@pytest.mark.parametrize("per_round", [3, 0])
def test_round_events_report_epsilon_as_dp_accounting_does(per_round):
    z, N = 1.2, 5
    _, events, _ = run(dp_cfg(per_round=per_round), z, rounds=3)
    assert [e["round"] for e in events] == [1, 2, 3]
    for e in events:
        gaussian = GaussianDpEvent(z / 2)  # replace-one: sensitivity of the sum 2C, noise std z C
        event = SampledWithoutReplacementDpEvent(N, per_round, gaussian) if per_round else gaussian
        accountant = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
        accountant.compose(event, e["round"])
        assert e["dp_epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
        assert e["dp_delta"] == 1e-5 and e["dp_noise_multiplier"] == z and e["dp_clipping_norm"] == 0.5
        assert e["clients"] == (per_round or N) and e["dp_noise_std"] == pytest.approx(z * 0.5 / e["clients"])
    assert events[0]["dp_epsilon"] < events[1]["dp_epsilon"] < events[2]["dp_epsilon"]


def test_epsilon_edge_cases():
    assert epsilon(0.0, 10, 0, 5, 1e-5) == math.inf and epsilon(1.0, 10, 0, 0, 1e-5) == 0.0
    assert epsilon(2.0, 10, 0, 5, 1e-5) < epsilon(1.0, 10, 0, 5, 1e-5)
    assert epsilon(1.0, 100, 10, 5, 1e-5) < epsilon(1.0, 100, 0, 5, 1e-5)  # amplification by sampling
    assert epsilon(1.0, 10, 10, 5, 1e-5) == epsilon(1.0, 10, 0, 5, 1e-5) == epsilon(1.0, 10, 20, 5, 1e-5)


def test_resume_keeps_the_adaptive_clipping_norm_and_the_noise(tmp_path):
    cfg = dp_cfg("server-adaptive", clipped_count_stddev=1.0)
    final, events, algo = run(cfg, 0.5, rounds=3, checkpoints=CheckpointStore(tmp_path / "a"))
    norms = [e["dp_clipping_norm"] for e in events]
    assert norms[0] == 0.5 and len(set(norms)) == 3  # it adapted every round
    run(cfg, 0.5, rounds=2, checkpoints=CheckpointStore(tmp_path / "b"))
    resumed, events_b, _ = run(cfg, 0.5, rounds=3, checkpoints=CheckpointStore(tmp_path / "b"))
    assert [e["round"] for e in events_b] == [3]
    assert events_b[0]["dp_clipping_norm"] == norms[2]
    assert all(np.array_equal(resumed[k], final[k]) for k in final)

    fresh = private(build_algorithm("fedavg", num_clients=5), cfg, 0.5)
    fresh.load_state_dict(algo.state_dict())
    assert fresh.clipping_norm == algo.clipping_norm != 0.5
    with pytest.raises(UserError, match="no clipping norm"):
        fresh.load_state_dict(build_algorithm("fedavg").state_dict())


# ---------------------------------------------------------------------------------------------
# secure aggregation: one pre-summed reply


class SecureTransport:
    """Each client trains as `answer` and clips with the payload's DP_CLIP; the server gets the
    uniform mean (``weigh`` = per-client weights, 1 by default) as one reply."""

    secure = True

    def __init__(self, weigh=lambda pid: 1):
        self.weigh = weigh

    def secure_exchange(self, server_round, payloads, expected):
        states, weights = [], []
        for pid, p in sorted(payloads.items()):
            trained = answer(pid, p).arrays[STATE]
            if P.DP_CLIP in p.config:
                trained = clip_update(trained, p.arrays[GLOBAL], float(p.config[P.DP_CLIP]))[0]
            states.append(trained)
            weights.append(self.weigh(pid))
        mean = {k: np.average([s[k] for s in states], axis=0, weights=weights).astype(np.float32) for k in states[0]}
        return Reply(-1, int(sum(weights)), {STATE: mean},
                     {P.NUM_CLIENTS: len(states), P.NUM_EXAMPLES: int(sum(weights)), P.TRAIN_LOSS: 1.0}), {}


def test_secure_aggregate_is_noised_with_m_from_its_metric():
    z, N = 0.8, 4
    cfg = dp_cfg("client-fixed", N=N)
    cfg.federated.secagg = True
    final, events, _ = run(cfg, z, rounds=1, transport=SecureTransport())
    x = state(0, dtype=np.float32)
    algo = private(build_algorithm("fedavg", num_clients=N), cfg, z)
    payloads = {pid: algo.configure(1, pid, x) for pid in range(N)}
    for p in payloads.values():
        p.config[P.SERVER_ROUND] = 1
    mean = SecureTransport().secure_exchange(1, payloads, {})[0].arrays[STATE]
    rng = noise_rng(cfg.seed, 1, NOISE_STREAM)
    std = z * 0.5 / N
    for k in sorted(mean):  # the noise draws in sorted key order
        expected = (mean[k].astype(np.float64) + rng.normal(0.0, std, mean[k].shape)).astype(np.float32)
        assert np.array_equal(final[k], expected), k
    assert events[0]["dp_noise_std"] == pytest.approx(std) and events[0]["clients"] == N
    assert "dp_clip_violations" not in events[0]  # the server cannot see them


def test_secure_aggregate_refusals():
    cfg = dp_cfg("client-fixed", N=4)
    with pytest.raises(UserError, match="weigh each client 1"):
        run(cfg, 1.0, rounds=1, transport=SecureTransport(weigh=lambda pid: pid + 1))
    with pytest.raises(UserError, match="secure aggregation hides"):
        run(dp_cfg("server-fixed", N=4), 1.0, rounds=1, transport=SecureTransport())
    cfg = dp_cfg("server-adaptive", N=4)
    cfg.federated.secagg = True
    with pytest.raises(UserError, match="use privacy.mode = client-fixed"):
        private(build_algorithm("fedavg", num_clients=4), cfg, 1.0)


# ---------------------------------------------------------------------------------------------
# the wrapper, and what it refuses


def test_wrapper_delegates_and_keeps_the_inner_name():
    inner = build_algorithm("fedprox", {"proximal_mu": 0.3}, num_clients=5)
    algo = wrap("client-fixed", 1.0, 0.9, inner=inner)
    x = state(0)
    p, q = algo.configure(2, 1, x), inner.configure(2, 1, x)
    assert algo.name == "fedprox" and algo.description == inner.description
    assert p.arrays.keys() == q.arrays.keys() and p.config == {**q.config, P.DP_CLIP: 0.9}
    assert algo.client_config(2) == {**inner.client_config(2), P.DP_CLIP: 0.9}
    assert algo.expected(2, 1, x) == inner.expected(2, 1, x) and algo.min_replies() == inner.min_replies()
    assert algo.options == inner.options and algo.resolved_options() == inner.resolved_options()
    algo.set_client_ranks([2, 2, 2, 2, 2])
    assert inner.ranks == [2] * 5 and algo.client_rank(3) == 2
    assert algo.secure_aggregatable and not wrap("server-fixed", inner=inner).secure_aggregatable
    assert P.DP_CLIP not in wrap("server-fixed", inner=inner).configure(1, 0, x).config


def test_private_is_the_identity_without_privacy():
    algo = build_algorithm("fedavg", num_clients=5)
    assert private(algo, dp_cfg("off"), 1.0) is algo
    assert private(algo, dp_cfg("server-fixed"), None) is algo
    assert isinstance(private(algo, dp_cfg("server-fixed"), 1.0), PrivateAlgorithm)


class TwoRecords(FedAvg):
    """A mean-type rule that (wrongly) expects a second record back."""

    def expected(self, server_round, client, global_state):
        return {**super().expected(server_round, client, global_state), "extra": {}}


@pytest.mark.parametrize("inner, message", [
    ("scaffold", "not the plain mean.*SCAFFOLD's controls"),
    ("fedsa_lora", "personalized"),
    ("krum", "selects or reweights"),
])
def test_refuses_what_it_cannot_make_private(inner, message):
    with pytest.raises(UserError, match=message):
        wrap(inner=build_algorithm(inner, num_clients=5))


def test_refuses_bad_settings():
    with pytest.raises(UserError, match="extra"):
        wrap(inner=TwoRecords(num_clients=2)).init(state(0))
    with pytest.raises(UserError, match="already private"):
        wrap(inner=wrap())
    with pytest.raises(UserError, match="privacy.mode must be one of"):
        wrap("local")
    for bad in ({"z": -1.0}, {"C": 0.0}, {"delta": 1.0}):
        with pytest.raises(UserError, match="noise multiplier >= 0"):
            wrap(**bad)
    with pytest.raises(UserError, match="clip_lr > 0"):
        wrap("server-adaptive", clip_lr=0.0)
