"""LoRA aggregation rules (b): FLoRA, FedEx-LoRA, FlexLoRA, HetLoRA.

1. Each rule against its paper's equations on random numpy factors: several layers of different
   shapes, unequal example counts, heterogeneous ranks where the rule allows them; the expected
   values are computed here from the equations (dense products, ``np.linalg.svd``), not with the
   modules' helpers. The exact rules (FLoRA, FedEx-LoRA): the effective global update after
   aggregation, R + s B A, equals R_before + sum_k p_k s B_k A_k (`lora.aggregation_error`).
2. One round on the real tiny model with clients of ranks 4 and 8 (global r = 8): configure ->
   `ClientRuntime.run_round` -> `protocol.validate_reply` against `expected` -> aggregate; for the
   residual rules, the server's evaluation model has W = W0 + R.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmllm.config import load_config
from fedmllm.federated import lora
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import GLOBAL, STATE, Reply, build_algorithm
from fedmllm.federated.algorithms.flexlora import flexlora_factors, product_svd
from fedmllm.federated.algorithms.flora import flora_stack
from fedmllm.federated.algorithms.hetlora import PRUNE_DECAY, PRUNE_LAMBDA, TailPenalty, prune_rank

S = 2.0  # LoRA scaling alpha / r
R_G = 5  # global rank
RANKS = [2, 5, 3]  # heterogeneous client ranks
COUNTS = [3, 7, 2]  # example counts (unequal weights)
LAYERS = {"m.l0.q_proj.": (12, 10), "m.l1.v_proj.": (8, 14), "m.l2.up_proj.": (16, 6)}  # (d_out, d_in)
OTHER = "m.head.weight"  # a non-LoRA key of the method's state


def p_weights(counts=COUNTS) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum()


def global_state(seed=0, rank=R_G) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for p, (d_out, d_in) in LAYERS.items():
        out[p + "lora_A.weight"] = rng.normal(size=(rank, d_in)).astype(np.float32)
        out[p + "lora_B.weight"] = rng.normal(size=(d_out, rank)).astype(np.float32)
    out[OTHER] = rng.normal(size=(3,)).astype(np.float32)
    return out


def client_states(ranks, seed=1) -> list[dict]:
    """Random trained client states (float32, as they come off the wire), rank r_k each."""
    out = []
    for k, r in enumerate(ranks):
        rng = np.random.default_rng([seed, k])
        st = {}
        for p, (d_out, d_in) in LAYERS.items():
            st[p + "lora_A.weight"] = rng.normal(size=(r, d_in)).astype(np.float32)
            st[p + "lora_B.weight"] = rng.normal(size=(d_out, r)).astype(np.float32)
        st[OTHER] = rng.normal(size=(3,)).astype(np.float32)
        out.append(st)
    return out


def replies(states, counts=COUNTS) -> list[Reply]:
    return [Reply(k, n, {STATE: st}) for k, (st, n) in enumerate(zip(states, counts))]


def f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def mean_update(states, prefix, counts=COUNTS) -> np.ndarray:
    """sum_k p_k s B_k A_k of one layer, dense."""
    return sum(pk * S * (f64(st[prefix + "lora_B.weight"]) @ f64(st[prefix + "lora_A.weight"]))
               for pk, st in zip(p_weights(counts), states))


def rel(a, b) -> float:
    return float(np.linalg.norm(f64(a) - f64(b)) / np.linalg.norm(f64(b)))


def with_residuals(states, x):
    """Client states carrying the round's residuals (so aggregation_error's target is R + ...)."""
    res = {k: v for k, v in x.items() if lora.is_residual(k)}
    return [{**st, **res} for st in states]


def lora_algo(name, options=None, ranks=None):
    algo = build_algorithm(name, options or {}, num_clients=len(COUNTS))
    algo.set_client_ranks(ranks)
    algo.set_lora_scaling(S)
    return algo


# ---------------------------------------------------------------------------------------------
# (1) FLoRA

def test_flora_stacking_is_the_weighted_sum_of_products():
    states = client_states(RANKS)
    for p, (d_out, d_in) in LAYERS.items():
        bs = [st[p + "lora_B.weight"] for st in states]
        as_ = [st[p + "lora_A.weight"] for st in states]
        b, a = flora_stack(bs, as_, COUNTS)
        assert b.shape == (d_out, sum(RANKS)) and a.shape == (sum(RANKS), d_in)
        np.testing.assert_allclose(b[:, 2:7], bs[1])  # B = [B_1 B_2 B_3]
        np.testing.assert_allclose(a[2:7], p_weights()[1] * f64(as_[1]), rtol=1e-12)  # A = [..; p_2 A_2; ..]
        assert rel(S * b @ a, mean_update(states, p)) < 1e-12


def test_flora_round_merges_the_exact_update_and_reinitializes_lora():
    algo = lora_algo("flora", ranks=RANKS)
    x = algo.init(global_state())
    for p, (d_out, d_in) in LAYERS.items():  # init adds a zero residual per layer
        assert x[p + "lora_residual"].shape == (d_out, d_in) and not x[p + "lora_residual"].any()
        x[p + "lora_residual"] = np.random.default_rng(5).normal(size=(d_out, d_in)).astype(np.float32)
    # client 0 (rank 2) receives A truncated to its rank, B likewise, the residuals, never uploads them
    sent = algo.configure(1, 0, x).arrays[GLOBAL]
    p0 = "m.l0.q_proj."
    np.testing.assert_array_equal(sent[p0 + "lora_A.weight"], x[p0 + "lora_A.weight"][:2])
    assert sent[p0 + "lora_B.weight"].shape == (12, 2) and p0 + "lora_residual" in sent
    exp = algo.expected(1, 0, x)[STATE]
    assert exp[p0 + "lora_A.weight"] == (2, 10) and exp[p0 + "lora_B.weight"] == (12, 2)
    assert not [k for k in exp if lora.is_residual(k)]

    states = client_states(RANKS)
    new = algo.aggregate(1, x, replies(states))
    assert {k: (v.shape, v.dtype) for k, v in new.items()} == {k: (v.shape, v.dtype) for k, v in x.items()}
    for p, (d_out, d_in) in LAYERS.items():
        expected_r = f64(x[p + "lora_residual"]) + mean_update(states, p)  # R_before + sum_k p_k s B_k A_k
        assert rel(new[p + "lora_residual"], expected_r) < 1e-6
        assert not new[p + "lora_B.weight"].any()  # B = 0
        a = new[p + "lora_A.weight"]
        assert a.shape == (R_G, d_in) and np.abs(a).max() <= 1 / np.sqrt(d_in) and np.abs(a).std() > 0
    err, relative = lora.aggregation_error(new, with_residuals(states, x), COUNTS, S)
    assert relative < 1e-6, (err, relative)
    np.testing.assert_allclose(new[OTHER], sum(pk * f64(st[OTHER]) for pk, st in zip(p_weights(), states)),
                               rtol=1e-6)
    # the fresh A: seeded by (round, layer), so the same for a resumed server, new every round
    again = lora_algo("flora", ranks=RANKS).aggregate(1, x, replies(states))
    assert all(np.array_equal(again[k], new[k]) for k in new)
    later = algo.aggregate(2, x, replies(states))
    assert not np.array_equal(later[p0 + "lora_A.weight"], new[p0 + "lora_A.weight"])
    assert not np.allclose(new[p0 + "lora_A.weight"][:, :6], new["m.l2.up_proj.lora_A.weight"])
    # what a deployment of the paper would broadcast: sum_k r_k (d_in + d_out) float32 per layer
    info = algo.round_info()
    stacked = sum(sum(RANKS) * (d_in + d_out) * 4 for d_out, d_in in LAYERS.values()) + 3 * 4
    assert info == {"stacked_downlink_bytes": stacked, "stacked_rank": sum(RANKS)}


@pytest.mark.parametrize("name", ["flora", "fedex_lora"])
def test_residual_rules_need_the_lora_scaling(name):
    with pytest.raises(ValueError, match="LoRA scaling"):
        build_algorithm(name).init(global_state())  # before any client trains
    assert build_algorithm(name).init({"w": np.zeros(3)}) is None  # no LoRA layers: nothing to add


# ---------------------------------------------------------------------------------------------
# (2) FedEx-LoRA

def test_fedex_lora_is_exact_and_sends_the_averaged_adapters():
    algo = lora_algo("fedex_lora")
    assert not algo.heterogeneous_ranks
    x = algo.init(global_state())
    rng = np.random.default_rng(9)
    for p, shape in LAYERS.items():
        x[p + "lora_residual"] = rng.normal(size=shape).astype(np.float32)
    states = client_states([R_G] * 3)
    new = algo.aggregate(1, x, replies(states))
    pw = p_weights()
    fedit_error = 0.0
    for p in LAYERS:
        bs = [f64(st[p + "lora_B.weight"]) for st in states]
        as_ = [f64(st[p + "lora_A.weight"]) for st in states]
        b_bar, a_bar = sum(w * b for w, b in zip(pw, bs)), sum(w * a for w, a in zip(pw, as_))
        np.testing.assert_allclose(new[p + "lora_B.weight"], b_bar, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new[p + "lora_A.weight"], a_bar, rtol=1e-5, atol=1e-6)
        mean_of_products = sum(w * b @ a for w, b, a in zip(pw, bs, as_))
        r_expected = f64(x[p + "lora_residual"]) + S * (mean_of_products - b_bar @ a_bar)
        assert rel(new[p + "lora_residual"], r_expected) < 1e-6
        fedit_error = max(fedit_error, rel(S * b_bar @ a_bar, S * mean_of_products))
    err, relative = lora.aggregation_error(new, with_residuals(states, x), COUNTS, S)
    assert relative < 1e-6, (err, relative)
    assert fedit_error > 0.1  # without the residual the update would be far off (FedIT's error)


# ---------------------------------------------------------------------------------------------
# (3) FlexLoRA

def best_rank(delta: np.ndarray, r: int) -> np.ndarray:
    u, sv, vt = np.linalg.svd(delta, full_matrices=False)
    return (u[:, :r] * sv[:r]) @ vt[:r]


def test_flexlora_global_adapter_is_the_best_rank_r_approximation():
    algo = lora_algo("flexlora", ranks=RANKS)
    x = global_state()
    states = client_states(RANKS)
    new = algo.aggregate(1, x, replies(states))
    for p in LAYERS:
        delta = mean_update(states, p)  # dW = sum_k p_k s B_k A_k
        b, a = f64(new[p + "lora_B.weight"]), f64(new[p + "lora_A.weight"])
        assert b.shape[1] == a.shape[0] == R_G
        sv = np.linalg.svd(delta, compute_uv=False)
        assert rel(S * b @ a, best_rank(delta, R_G)) < 1e-6  # Eckart-Young
        np.testing.assert_allclose(np.linalg.norm(delta - S * b @ a), np.sqrt(np.sum(sv[R_G:] ** 2)), rtol=1e-5)
        # the singular values split evenly (B^T B = A A^T = diag(sigma / s)), the dense way agrees
        np.testing.assert_allclose(b.T @ b, np.diag(sv[:R_G] / S), atol=1e-5 * sv[0])
        np.testing.assert_allclose(a @ a.T, np.diag(sv[:R_G] / S), atol=1e-5 * sv[0])
        b_dense, a_dense = lora.svd_factors(delta, R_G, S)
        assert rel(S * b @ a, S * b_dense @ a_dense) < 1e-6
        # client k receives its best rank-r_k approximation
        for k, r in enumerate(RANKS):
            sent = algo.configure(2, k, new).arrays[GLOBAL]
            bk, ak = f64(sent[p + "lora_B.weight"]), f64(sent[p + "lora_A.weight"])
            assert bk.shape[1] == ak.shape[0] == r
            assert rel(S * bk @ ak, best_rank(delta, r)) < 1e-6
    assert algo.expected(2, 0, new)[STATE]["m.l1.v_proj.lora_A.weight"] == (2, 14)


def test_flexlora_low_rank_svd_matches_dense_and_pads_a_rank_deficient_update():
    rng = np.random.default_rng(3)
    b, a = rng.normal(size=(9, 4)), rng.normal(size=(4, 7))
    u, sv, vt = product_svd(b, a)
    np.testing.assert_allclose(sv, np.linalg.svd(b @ a, compute_uv=False)[:4], rtol=1e-10)
    np.testing.assert_allclose((u * sv) @ vt, b @ a, atol=1e-10)
    # one client of rank 2 < r_g: dW has rank 2, reproduced exactly, zero padding beyond
    bn, an = flexlora_factors([b[:, :2]], [a[:2]], [1.0], rank=5)
    assert bn.shape == (9, 5) and an.shape == (5, 7)
    np.testing.assert_allclose(bn @ an, b[:, :2] @ a[:2], atol=1e-10)
    assert not bn[:, 2:].any() and not an[2:].any()


# ---------------------------------------------------------------------------------------------
# (4) HetLoRA

def test_hetlora_truncates_pads_and_weights_by_update_norms():
    algo = lora_algo("hetlora", ranks=RANKS)
    x = global_state()
    for k, r in enumerate(RANKS):  # truncation to r_k, the reply expected at r_k
        sent = algo.configure(1, k, x).arrays[GLOBAL]
        for p, (d_out, d_in) in LAYERS.items():
            np.testing.assert_array_equal(sent[p + "lora_A.weight"], x[p + "lora_A.weight"][:r])
            np.testing.assert_array_equal(sent[p + "lora_B.weight"], x[p + "lora_B.weight"][:, :r])
            exp = algo.expected(1, k, x)[STATE]
            assert exp[p + "lora_A.weight"] == (r, d_in) and exp[p + "lora_B.weight"] == (d_out, r)
    states = client_states(RANKS)
    new = algo.aggregate(1, x, replies(states))
    for p, (d_out, d_in) in LAYERS.items():
        norms = np.array([np.linalg.norm(f64(st[p + "lora_B.weight"]) @ f64(st[p + "lora_A.weight"]))
                          for st in states])
        w = norms / norms.sum()  # ||S_k||_F / Z, per layer, instead of p_k
        b_exp, a_exp = np.zeros((d_out, R_G)), np.zeros((R_G, d_in))
        for wk, st, r in zip(w, states, RANKS):
            b_exp[:, :r] += wk * f64(st[p + "lora_B.weight"])  # zero-padded to r_g
            a_exp[:r] += wk * f64(st[p + "lora_A.weight"])
        np.testing.assert_allclose(new[p + "lora_B.weight"], b_exp, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new[p + "lora_A.weight"], a_exp, rtol=1e-5, atol=1e-6)
        assert new[p + "lora_A.weight"].dtype == np.float32
    # the alternatives: plain zero-padding FedAvg, and norms times example counts
    p0 = "m.l0.q_proj."
    for weighting in ("examples", "norm_examples"):
        other = lora_algo("hetlora", {"weighting": weighting}, ranks=RANKS).aggregate(1, x, replies(states))
        norms = np.array([np.linalg.norm(f64(st[p0 + "lora_B.weight"]) @ f64(st[p0 + "lora_A.weight"]))
                          for st in states])
        w = p_weights() if weighting == "examples" else p_weights() * norms / (p_weights() * norms).sum()
        a_exp = np.zeros((R_G, 10))
        for wk, st, r in zip(w, states, RANKS):
            a_exp[:r] += wk * f64(st[p0 + "lora_A.weight"])
        np.testing.assert_allclose(other[p0 + "lora_A.weight"], a_exp, rtol=1e-5, atol=1e-6)


def test_hetlora_self_pruning_shrinks_the_rank_consistently():
    algo = lora_algo("hetlora", {"self_prune": True, "prune_decay": 0.8, "prune_lambda": 0.5}, ranks=RANKS)
    x = global_state()
    payload = algo.configure(1, 1, x)  # client 1: rank 5, tail = ranks floor(0.8 * 5) = 4 .. 4
    assert payload.config == {PRUNE_DECAY: 0.8, PRUNE_LAMBDA: 0.5}
    sent = payload.arrays[GLOBAL]
    states = client_states(RANKS)
    shrunk = {k: v.copy() for k, v in states[1].items()}
    for p in LAYERS:  # client 1's tail shrank during training: it prunes to rank 4
        shrunk[p + "lora_A.weight"][4:] *= 1e-3
    prefixes = list(LAYERS)
    assert prune_rank(sent, shrunk, prefixes, 0.8) == 4
    assert prune_rank(sent, {k: 10 * v for k, v in states[1].items()}, prefixes, 0.8) is None  # tail grew
    assert prune_rank(sent, shrunk, prefixes, 0.8, min_rank=5) is None
    before = {k: v.copy() for k, v in shrunk.items()}
    states[1] = shrunk
    for k in (0, 2):  # clients 0 and 2 grew their tails: they keep their ranks
        for p in LAYERS:
            states[k][p + "lora_A.weight"] *= 100
    new = algo.aggregate(1, x, replies(states))
    assert algo.pruned == {1: 4}
    # the pruned tail was dropped before padding: only clients 0 (rank 2) and 2 (rank 3) fill rank 4
    p0 = "m.l0.q_proj."
    a0 = f64(new[p0 + "lora_A.weight"])
    assert not a0[4:].any() and np.abs(a0[3]).max() > 0
    assert all(np.array_equal(before[k], states[1][k]) for k in before)  # the reply was not modified
    # from now on client 1 trains (and replies at) rank 4; the pruned ranks survive a resume
    payload = algo.configure(2, 1, new)
    assert payload.config[P.LORA_RANK] == 4 and payload.arrays[GLOBAL][p0 + "lora_A.weight"].shape == (4, 10)
    assert algo.expected(2, 1, new)[STATE][p0 + "lora_B.weight"] == (12, 4)
    resumed = lora_algo("hetlora", {"self_prune": True}, ranks=RANKS)
    resumed.load_state_dict(algo.state_dict())
    assert resumed.pruned == {1: 4} and resumed.expected(2, 1, new) == algo.expected(2, 1, new)
    assert P.LORA_RANK not in algo.configure(2, 0, new).config  # unpruned: the loop's rank stands
    # the client's regularizer: lambda sum_layers ||B[:, g:]||_F ||A[g:]||_F, g = floor(gamma r)
    params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in sent.items() if k != OTHER}
    hook = TailPenalty(0.8, 0.5, prefixes)
    (hook_from_algo,) = algo.hooks(algo.configure(1, 1, x), {}, None, sent)
    for h in (hook, hook_from_algo):
        h.on_start(None, params)
        expected = 0.5 * sum(np.linalg.norm(f64(sent[p + "lora_B.weight"])[:, 4:])
                             * np.linalg.norm(f64(sent[p + "lora_A.weight"])[4:]) for p in prefixes)
        assert float(h.loss_term(None, params).detach()) == pytest.approx(expected, rel=1e-5)
    assert lora_algo("hetlora").hooks(lora_algo("hetlora").configure(1, 0, x), {}, None, sent) == []


# ---------------------------------------------------------------------------------------------
# (5) our round loop: residuals, ranks and pruned ranks through checkpoints and a resume

class Crash(Exception):
    pass


class FakeLoraClients:
    """The loop's transport in memory: each client strips the residuals (as the client runtime
    does), moves every received array by seeded noise and, under HetLoRA, shrinks client 1's last
    rank (so it self-prunes every round) and grows the others'; ``crash_in_round``: the server
    dies after that round's training."""

    def __init__(self, crash_in_round=None):
        self.crash_in_round, self.payloads = crash_in_round, {}

    def exchange(self, server_round, payloads):
        from fedmllm.federated.rounds import RawReply

        raw = {}
        for pid, payload in payloads.items():
            self.payloads[(server_round, pid)] = payload
            rng = np.random.default_rng([server_round, pid])
            got = {k: v for k, v in payload.arrays[GLOBAL].items() if not lora.is_residual(k)}
            out = {k: (v + 0.1 * rng.normal(size=v.shape)).astype(v.dtype) for k, v in got.items()}
            if payload.config[P.ALGORITHM] == "hetlora":  # client 1's tail shrinks, the others' grow
                for k in out:
                    if k.endswith("lora_A.weight"):
                        out[k][-1:] *= 0.01 if pid == 1 else 3.0
            raw[pid] = RawReply({STATE: out}, {P.NUM_EXAMPLES: COUNTS[pid], P.TRAIN_LOSS: 1.0,
                                               P.PARTITION_ID: pid})
        if server_round == self.crash_in_round:
            raise Crash(server_round)
        return raw, {}


def run_loop(name, root, options=None, crash_in_round=None):
    from fedmllm.federated.checkpoint import CheckpointStore
    from fedmllm.federated.rounds import LoopSettings, RoundLoop

    algo = build_algorithm(name, options or {}, num_clients=len(COUNTS))
    clients = FakeLoraClients(crash_in_round)
    settings = LoopSettings(system="sys", rounds=3, num_clients=len(COUNTS), clients_per_round=0, seed=1,
                            local_steps=1, base_lr=0.1, client_ranks=None if name == "fedex_lora" else RANKS,
                            lora_scaling=S)
    loop = RoundLoop(algo, clients, settings, log=lambda e: None, metrics_size=lambda: 0,
                     checkpoints=CheckpointStore(root))
    return loop.run(global_state()), algo, clients


@pytest.mark.parametrize("name, options", [("flora", {}), ("fedex_lora", {}), ("flexlora", {}),
                                           ("hetlora", {"self_prune": True, "prune_decay": 0.8})])
def test_round_loop_resumes_bit_identically(name, options, tmp_path):
    final, algo, clients = run_loop(name, tmp_path / "ref", options)
    assert algo.lora_scaling == S and all(np.isfinite(v).all() for v in final.values())
    assert (lora.residual_key("m.l0.q_proj.") in final) == (name in ("flora", "fedex_lora"))
    if name == "hetlora":  # client 1 (rank 5) pruned to 4 in round 1, to 3 in round 2, to 2 in round 3
        assert algo.pruned == {1: 2}
        assert clients.payloads[(2, 1)].config[P.LORA_RANK] == 4  # the algorithm's rank wins
        assert clients.payloads[(3, 1)].arrays[GLOBAL]["m.l0.q_proj.lora_A.weight"].shape == (3, 10)
        assert clients.payloads[(3, 0)].config[P.LORA_RANK] == 2  # the others keep theirs
    elif name != "fedex_lora":
        assert clients.payloads[(2, 0)].config[P.LORA_RANK] == 2
    with pytest.raises(Crash):
        run_loop(name, tmp_path / "resumed", options, crash_in_round=2)
    resumed, algo2, _ = run_loop(name, tmp_path / "resumed", options)
    assert list(resumed) == list(final)
    assert all(np.array_equal(resumed[k], final[k]) for k in final)
    assert algo2.state_dict() == algo.state_dict()


# ---------------------------------------------------------------------------------------------
# (6) end to end on the tiny model: clients of ranks 4 and 8, global r = 8

TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=2", "federated.rounds=2",
        "federated.local_steps=2", "federated.upstream_n=2", "federated.baselines=[]", "methods.lora.r=8"]
E2E_RANKS = {"flora": [4, 8], "fedex_lora": None, "flexlora": [4, 8], "hetlora": [4, 8]}


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TINY)


@pytest.fixture(scope="module")
def runtime(cfg):
    from fedmllm.federated.sequential import default_runtime

    return default_runtime(cfg)


@pytest.fixture(scope="module")
def server(cfg):
    from fedmllm.experiment import ExperimentData
    from fedmllm.federated.runtime import ServerRuntime

    return ServerRuntime(cfg, ExperimentData())


def run_client(runtime, algo, rnd, pid, x, ranks):
    payload = algo.configure(rnd, pid, x)
    payload.config.update({P.SERVER_ROUND: rnd, P.LR: 1e-2, P.LOCAL_STEPS: 1, P.ALGORITHM: algo.name})
    if ranks:
        payload.config.setdefault(P.LORA_RANK, ranks[pid])  # as LoopSettings.client_config sets it
    update = runtime.run_round(pid, payload, {})
    metrics = {P.NUM_EXAMPLES: update.num_examples, P.TRAIN_LOSS: update.train_loss, P.PARTITION_ID: pid}
    return P.validate_reply(pid, update.arrays, metrics, algo.expected(rnd, pid, x))


def base_weight(tuned, prefix):
    module = tuned.model.get_submodule(prefix.rstrip("."))
    return getattr(module, "base_layer", module).weight.detach().numpy().astype(np.float64)


@pytest.mark.parametrize("name", list(E2E_RANKS))
def test_one_round_on_the_tiny_model_with_mixed_ranks(name, cfg, runtime, server):
    from fedmllm.federated.tuned import rank_scaling

    r_g, s = rank_scaling(cfg)
    assert (r_g, s) == (8, 2.0)
    ranks = E2E_RANKS[name]
    algo = build_algorithm(name, {"self_prune": True} if name == "hetlora" else {}, num_clients=2)
    algo.set_client_ranks(ranks)
    algo.set_lora_scaling(s)
    x0 = {k: v.copy() for k, v in runtime.initial.items()}
    x = algo.init(x0) or x0
    got = [run_client(runtime, algo, 1, pid, x, ranks) for pid in (0, 1)]
    prefixes = lora.layers([k for k in x if not lora.is_residual(k)])
    if ranks:  # the rank-4 client trained and replied a rank-4 adapter, on the same base weights
        assert got[0].arrays[STATE][lora.a_key(prefixes[0])].shape[0] == 4
        np.testing.assert_array_equal(base_weight(runtime.models.get(4), prefixes[0]),
                                      base_weight(runtime.models.get(None), prefixes[0]))
    states = [r.arrays[STATE] for r in got]
    new = algo.aggregate(1, x, got)
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in x.items()}
    assert all(np.isfinite(v).all() for v in new.values())
    if name in ("flora", "fedex_lora"):
        err, relative = lora.aggregation_error(new, with_residuals(states, x), [r.num_examples for r in got], s)
        assert relative < 1e-6, (err, relative)
        # the server's evaluation model: base weight = W0 + R (W0: the weight of a zero residual)
        p = prefixes[0]
        w0 = base_weight(server.load(x), p)
        assert np.abs(new[lora.residual_key(p)]).max() > 0
        tuned = server.load(new)
        np.testing.assert_allclose(base_weight(tuned, p), w0 + f64(new[lora.residual_key(p)]), atol=1e-6)
        np.testing.assert_allclose(base_weight(server.load(new), p), base_weight(tuned, p))  # no accumulation
        np.testing.assert_allclose(base_weight(server.load(x), p), w0)
    if name == "flexlora":
        p = prefixes[0]
        weights = np.array([r.num_examples for r in got], dtype=np.float64)
        delta = sum(w / weights.sum() * s * f64(st[lora.b_key(p)]) @ f64(st[lora.a_key(p)])
                    for w, st in zip(weights, states))
        assert rel(s * f64(new[lora.b_key(p)]) @ f64(new[lora.a_key(p)]), best_rank(delta, 8)) < 1e-5
    if name == "hetlora":  # a client pruned to rank 3 trains and replies at rank 3 the next round
        algo.pruned[0] = 3
        again = run_client(runtime, algo, 2, 0, new, ranks)
        assert again.arrays[STATE][lora.a_key(prefixes[0])].shape[0] == 3
