"""LoRA aggregation rules, set A: FedIT, FFA-LoRA, RoLoRA, FedSA-LoRA, FedSVD.

1. Each server rule against its paper's equation, computed here in numpy from the random factors
   (several layers of different shapes, one with d_out < r, a non-LoRA key, unequal example
   counts), independently of the implementation; the exact rules to 1e-6 relative error in the
   effective update s B A.
2. Messages: what each payload and reply holds (A or B never travels where the method says not).
3. The real client runtime on the tiny model (`default_runtime`): frozen factors bit-identical
   after a round, local B carried to the next round, FedSVD's aggregate of real replies.
4. The round-loop contract of tests/test_algorithms.py on a LoRA-shaped state (checkpoints, a
   bit-identical resume, Flower's Strategy.start), with each rule's invariant on the final state.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedmllm.config import load_config
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import GLOBAL, MODEL, STATE, build_algorithm
from fedmllm.federated.algorithms.fedsa_lora import FedSALoRA
from fedmllm.federated.algorithms.fedsvd import fedsvd_refactor
from fedmllm.federated.algorithms.rolora import PHASE
from fedmllm.federated.sequential import default_runtime
from fedmllm.training.hooks import TrainHook

NAMES = ["fedit", "ffa_lora", "rolora", "fedsa_lora", "fedsvd"]
RANK, SCALING = 3, 16.0 / 3  # r and s = alpha / r
# layer prefix -> (d_out, d_in); "up" has d_out = 2 < r
LAYERS = {"model.layers.0.q_proj.": (6, 5), "model.layers.0.up.": (2, 7), "model.layers.1.down_proj.": (9, 4)}
EXTRA = "model.norm.weight"  # a non-LoRA key of the method's state: averaged as in FedAvg
COUNTS = [3, 1, 6, 2]  # unequal example counts
P_K = np.asarray(COUNTS, dtype=np.float64) / sum(COUNTS)


def akey(prefix):
    return prefix + "lora_A.weight"


def bkey(prefix):
    return prefix + "lora_B.weight"


def random_state(rng, dtype=np.float64, zero_b=False) -> dict:
    out = {}
    for prefix, (d_out, d_in) in LAYERS.items():
        out[akey(prefix)] = rng.normal(size=(RANK, d_in)).astype(dtype)
        b = np.zeros((d_out, RANK)) if zero_b else rng.normal(size=(d_out, RANK))
        out[bkey(prefix)] = b.astype(dtype)
    out[EXTRA] = rng.normal(size=(5,)).astype(dtype)
    return out


def clients_of(x: dict, seed: int, moved) -> list[dict]:
    """One random trained state per client: x with the keys in ``moved`` replaced by random values."""
    rng = np.random.default_rng([seed, 1])
    return [{k: (rng.normal(size=v.shape).astype(v.dtype) if k in moved else v.copy()) for k, v in x.items()}
            for _ in COUNTS]


def replies_for(algo, rnd: int, x: dict, trained: list[dict]) -> list:
    """Each client's reply as the algorithm's client half builds it (`prepare` from the payload,
    `finish` of the trained state), validated against what the server expects."""
    from fedmllm.federated.algorithms import LocalResult

    out = []
    for pid, state in enumerate(trained):
        payload = algo.configure(rnd, pid, x)
        payload.config.update({P.SERVER_ROUND: rnd})
        _, _, plan = algo.prepare(payload, {}, None, x)
        arrays, _ = algo.finish(payload, {}, plan, LocalResult(state, 1, 0.1))
        metrics = {P.NUM_EXAMPLES: COUNTS[pid], P.TRAIN_LOSS: 1.0, P.PARTITION_ID: pid}
        out.append(P.validate_reply(pid, arrays, metrics, algo.expected(rnd, pid, x)))
    return out


def mean(states, key) -> np.ndarray:
    return sum(p * np.asarray(s[key], np.float64) for p, s in zip(P_K, states))


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def effective(state, prefix) -> np.ndarray:
    return SCALING * np.asarray(state[bkey(prefix)], np.float64) @ np.asarray(state[akey(prefix)], np.float64)


def target(states, prefix) -> np.ndarray:
    """sum_k p_k s B_k A_k: the mean of the clients' effective updates (the exact aggregate)."""
    return sum(p * effective(s, prefix) for p, s in zip(P_K, states))


ERRORS: dict[str, float] = {}  # rule -> max relative error seen (printed with -s)


def record(name, err):
    """Keep the largest error of ``name`` (negative values: the smallest of -err)."""
    ERRORS[name] = max(ERRORS.get(name, -np.inf), err)
    return err


# ---------------------------------------------------------------------------------------------
# (1) the rules against their papers' equations


@pytest.mark.parametrize("seed", [0, 1])
def test_fedit_averages_a_and_b_separately_and_is_inexact(seed):
    """FedIT: A <- sum p_k A_k, B <- sum p_k B_k; s B_bar A_bar != sum p_k s B_k A_k."""
    algo = build_algorithm("fedit")
    x = random_state(np.random.default_rng(seed))
    trained = clients_of(x, seed, set(x))
    new = algo.aggregate(1, x, replies_for(algo, 1, x, trained))
    for k in x:
        np.testing.assert_allclose(new[k], mean(trained, k), rtol=1e-12)
    gaps = [rel(effective(new, p), target(trained, p)) for p in LAYERS]
    record("fedit (inexact: smallest layer gap)", -min(gaps))
    assert min(gaps) > 1e-2  # the cross terms p_j p_k B_j A_k do not cancel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ffa_lora_is_exact_with_the_common_a(seed, dtype):
    """FFA-LoRA: B <- sum p_k B_k, A kept; s B_bar A = sum p_k s B_k A."""
    algo = build_algorithm("ffa_lora")
    x = random_state(np.random.default_rng(seed), dtype)
    trained = clients_of(x, seed, {bkey(p) for p in LAYERS} | {EXTRA})
    new = algo.aggregate(1, x, replies_for(algo, 1, x, trained))
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for p in LAYERS:
        assert np.array_equal(new[akey(p)], x[akey(p)]) and new[akey(p)].dtype == dtype
        np.testing.assert_allclose(new[bkey(p)], mean(trained, bkey(p)), rtol=tol, atol=tol)
        assert record(f"ffa_lora {np.dtype(dtype).name}", rel(effective(new, p), target(trained, p))) < tol
    np.testing.assert_allclose(new[EXTRA], mean(trained, EXTRA), rtol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_rolora_alternates_and_each_round_is_exact(seed, dtype):
    """RoLoRA: round 1 trains/averages B (A common), round 2 A (B common), round 3 B again; each
    round s B A of the new global equals sum p_k s B_k A_k of that round's clients."""
    algo = build_algorithm("rolora")
    x = random_state(np.random.default_rng(seed), dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for rnd, trained_factor in [(1, bkey), (2, akey), (3, bkey)]:
        frozen_factor = akey if trained_factor is bkey else bkey
        payload = algo.configure(rnd, 0, x)
        assert payload.config == {PHASE: "B" if trained_factor is bkey else "A"}
        assert set(payload.arrays[GLOBAL]) == set(x)  # both factors go down
        trained = clients_of(x, seed + 10 * rnd, {trained_factor(p) for p in LAYERS} | {EXTRA})
        replies = replies_for(algo, rnd, x, trained)
        assert set(replies[0].arrays[STATE]) == {trained_factor(p) for p in LAYERS} | {EXTRA}
        new = algo.aggregate(rnd, x, replies)
        for p in LAYERS:
            assert np.array_equal(new[frozen_factor(p)], x[frozen_factor(p)])
            np.testing.assert_allclose(new[trained_factor(p)], mean(trained, trained_factor(p)),
                                       rtol=tol, atol=tol)
            err = rel(effective(new, p), target(trained, p))
            assert record(f"rolora {np.dtype(dtype).name}", err) < tol
        x = new


@pytest.mark.parametrize("seed", [0, 1])
def test_fedsa_lora_averages_a_and_keeps_b_off_the_wire(seed):
    """FedSA-LoRA: A <- sum p_k A_k; B neither sent nor uploaded; the global B untouched."""
    algo = build_algorithm("fedsa_lora")
    assert algo.personalized and not algo.heterogeneous_ranks
    x = random_state(np.random.default_rng(seed), zero_b=True)
    b_keys = {bkey(p) for p in LAYERS}
    payload = algo.configure(1, 2, x)
    assert set(payload.arrays[GLOBAL]) == set(x) - b_keys and payload.config == {}
    assert set(algo.expected(1, 2, x)[STATE]) == set(x) - b_keys
    trained = clients_of(x, seed, set(x))  # clients train A, B and the rest
    replies = replies_for(algo, 1, x, trained)
    assert all(set(r.arrays[STATE]) == set(x) - b_keys for r in replies)
    new = algo.aggregate(1, x, replies)
    for p in LAYERS:
        np.testing.assert_allclose(new[akey(p)], mean(trained, akey(p)), rtol=1e-12)
        assert np.array_equal(new[bkey(p)], x[bkey(p)]) and not new[bkey(p)].any()
    np.testing.assert_allclose(new[EXTRA], mean(trained, EXTRA), rtol=1e-12)


def svd_reference(m: np.ndarray, r: int):
    """numpy's thin SVD of m: (U_r, S_r, V_r^T), numpy's third output being V^T."""
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return u[:, :r], s[:r], vt[:r]


def check_fedsvd_factors(b_new, a_new, b_bar, a_old, name):
    """B' A' = B_bar A, A' A'^T = I, and (B', A') = (U_r S_r D, D V_r^T) for a sign diagonal D on
    the singular directions with non-zero singular values (numpy's SVD of B_bar A, computed here)."""
    r = a_old.shape[0]
    m = np.asarray(b_bar, np.float64) @ np.asarray(a_old, np.float64)
    tol = 1e-6
    assert record(f"{name} B'A' = B_bar A", rel(np.asarray(b_new, np.float64) @ a_new, m)) < tol
    a64 = np.asarray(a_new, np.float64)
    assert record(f"{name} max|A'A'^T - I| (abs)", float(np.abs(a64 @ a64.T - np.eye(r)).max())) < tol
    u, s, vt = svd_reference(m, r)
    k = int((s > 1e-9 * s[0]).sum())  # the non-zero singular values (k < r when d_out < r)
    signs = np.sign(np.sum(a64[:k] * vt[:k], axis=1))
    np.testing.assert_allclose(a64[:k], signs[:, None] * vt[:k], atol=1e-5)  # A' = V_r^T, rowwise
    np.testing.assert_allclose(np.asarray(b_new, np.float64)[:, :k], u[:, :k] * (s[:k] * signs), rtol=1e-5,
                               atol=1e-5 * s[0])
    assert np.abs(np.asarray(b_new)[:, k:]).max(initial=0) < 1e-5 * s[0]  # B' = U_r S_r: zero beyond


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fedsvd_refactors_b_bar_a_by_its_svd(seed, dtype):
    """FedSVD: B_bar = sum p_k B_k; B_bar A = U S V^T; A <- V_r^T, B <- U_r S_r; two rounds (the
    second from the orthonormal A of the first)."""
    algo = build_algorithm("fedsvd")
    x = random_state(np.random.default_rng(seed), dtype)
    for rnd in (1, 2):
        payload = algo.configure(rnd, 0, x)
        assert set(payload.arrays[GLOBAL]) == set(x)  # A changes every round: it goes down
        trained = clients_of(x, seed + 10 * rnd, {bkey(p) for p in LAYERS} | {EXTRA})
        replies = replies_for(algo, rnd, x, trained)
        assert set(replies[0].arrays[STATE]) == {bkey(p) for p in LAYERS} | {EXTRA}  # B only up
        new = algo.aggregate(rnd, x, replies)
        for p in LAYERS:
            assert new[akey(p)].dtype == new[bkey(p)].dtype == dtype
            check_fedsvd_factors(new[bkey(p)], new[akey(p)], mean(trained, bkey(p)), x[akey(p)], "fedsvd")
            # the aggregate is exact: s B' A' = sum p_k s B_k A (A common in the round)
            err = rel(effective(new, p), target(trained, p))
            assert record("fedsvd s B'A' vs sum p_k s B_k A", err) < 1e-6
        np.testing.assert_allclose(new[EXTRA], mean(trained, EXTRA), rtol=1e-6)
        x = new


def test_fedsvd_refactor_pure_function_and_the_v_transpose_bug():
    """`fedsvd_refactor` on random factors of several shapes (d_out < r, d_out > d_in, square,
    a zero B_bar); and the public bug (rows of V instead of V^T) fails the same check."""
    rng = np.random.default_rng(3)
    for d_out, d_in, r in [(7, 5, 3), (2, 6, 4), (5, 5, 5), (12, 8, 2)]:
        b_bar, a = rng.normal(size=(d_out, r)), rng.normal(size=(r, d_in))
        b_new, a_new = fedsvd_refactor(b_bar, a)
        assert b_new.shape == (d_out, r) and a_new.shape == (r, d_in)
        check_fedsvd_factors(b_new, a_new, b_bar, a, "fedsvd_refactor")
    b_new, a_new = fedsvd_refactor(np.zeros((4, 2)), rng.normal(size=(2, 6)))
    assert not b_new.any() and np.allclose(a_new @ a_new.T, np.eye(2))
    with pytest.raises(ValueError, match="rank <= the layer's input size"):
        fedsvd_refactor(np.zeros((4, 3)), np.zeros((3, 2)))
    # FedLLM-Factory's V[:r, :] after torch.svd (which returns V): rows of V, not of V^T
    b_bar, a = rng.normal(size=(7, 3)), rng.normal(size=(3, 5))
    u, s, vt = np.linalg.svd(b_bar @ a)
    buggy = vt.T[:3, :]
    assert rel((u[:, :3] * s[:3]) @ buggy, b_bar @ a) > 0.1


# ---------------------------------------------------------------------------------------------
# (2) flags and messages of every rule


def test_flags_and_registration():
    for name in NAMES:
        algo = build_algorithm(name)
        assert algo.name == name and not algo.heterogeneous_ranks and algo.description
        assert algo.personalized == (name == "fedsa_lora")
        assert algo.state_dict() == {"arrays": {}, "values": {}}  # no server state beyond the global


@pytest.mark.parametrize("name,down,up", [
    ("fedit", {"A", "B", "x"}, {"A", "B", "x"}),
    ("ffa_lora", {"B", "x"}, {"B", "x"}),
    ("fedsa_lora", {"A", "x"}, {"A", "x"}),
    ("fedsvd", {"A", "B", "x"}, {"B", "x"}),
])
def test_what_travels(name, down, up):
    x = random_state(np.random.default_rng(0))
    kind = {k: "A" if k.endswith("lora_A.weight") else "B" if k.endswith("lora_B.weight") else "x"
            for k in x}
    algo = build_algorithm(name)
    assert {kind[k] for k in algo.configure(1, 0, x).arrays[GLOBAL]} == down
    assert {kind[k] for k in algo.expected(1, 0, x)[STATE]} == up
    for k in algo.configure(1, 0, x).arrays[GLOBAL]:
        assert np.array_equal(algo.configure(1, 0, x).arrays[GLOBAL][k], x[k])


# ---------------------------------------------------------------------------------------------
# (3) the real client runtime on the tiny model

TINY = ["model.name=tiny-vila", "model.pretrained=false", "data.train_n=8", "data.test_n=4",
        "data.upstream_n=4", "train.batch_size=4", "federated.num_clients=2", "federated.rounds=2",
        "federated.local_steps=2", "federated.upstream_n=2", "federated.baselines=[]"]


@pytest.fixture(scope="module")
def runtime():
    return default_runtime(load_config(None, TINY))


def live_state(runtime) -> dict:
    return {k: p.detach().numpy().copy() for k, p in runtime.method.state_parameters(runtime.model).items()}


def keys_of(state, factor: str) -> list[str]:
    return [k for k in state if k.endswith(f"lora_{factor}.weight")]


def run(runtime, algo, rnd, pid, x, local=None):
    payload = algo.configure(rnd, pid, x)
    payload.config.update({P.SERVER_ROUND: rnd, P.LR: 1e-2, P.LOCAL_STEPS: 2, P.ALGORITHM: algo.name})
    return payload, runtime.run_round(pid, payload, local or {})


def test_ffa_lora_on_the_tiny_model_keeps_a_bit_identical(runtime):
    algo = build_algorithm("ffa_lora")
    x = dict(runtime.initial)
    a, b = keys_of(x, "A"), keys_of(x, "B")
    assert a and len(a) == len(b)
    payload, update = run(runtime, algo, 1, 0, x)
    assert not set(a) & set(payload.arrays[GLOBAL])  # A never travels: every client holds it
    assert set(update.arrays[STATE]) == set(b)  # the reply is B only (half the adapter)
    live = live_state(runtime)
    assert all(np.array_equal(live[k], x[k]) for k in a)  # A bit-identical after the round
    assert all(runtime.method.state_parameters(runtime.model)[k].requires_grad for k in a)  # restored
    assert any(np.abs(update.arrays[STATE][k]).max() > 0 for k in b)  # B trained (from 0)
    assert all(np.array_equal(update.arrays[STATE][k], live[k]) for k in b)


def test_rolora_on_the_tiny_model_trains_one_factor_per_round(runtime):
    algo = build_algorithm("rolora")
    x = dict(runtime.initial)
    a, b = keys_of(x, "A"), keys_of(x, "B")
    _, first = run(runtime, algo, 1, 0, x)  # phase B: A frozen
    assert set(first.arrays[STATE]) == set(b)
    live = live_state(runtime)
    assert all(np.array_equal(live[k], x[k]) for k in a)
    assert any(np.abs(first.arrays[STATE][k]).max() > 0 for k in b)
    x2 = algo.aggregate(1, x, [P.validate_reply(0, first.arrays, {P.NUM_EXAMPLES: first.num_examples,
                                                                  P.TRAIN_LOSS: 1.0, P.PARTITION_ID: 0},
                                                algo.expected(1, 0, x))])
    _, second = run(runtime, algo, 2, 1, x2)  # phase A: B frozen at the aggregated B
    assert set(second.arrays[STATE]) == set(a)
    live = live_state(runtime)
    assert all(np.array_equal(live[k], x2[k]) for k in b)
    assert any(not np.array_equal(second.arrays[STATE][k], x2[k]) for k in a)  # A trained


class RecordStart(TrainHook):
    """Keeps the trainable state the local training starts from (what `prepare` set)."""

    def __init__(self, method):
        self.method, self.start = method, None

    def on_start(self, model, params):
        self.start = {k: p.detach().numpy().copy() for k, p in self.method.state_parameters(model).items()}


class RecordingFedSA(FedSALoRA):
    name = "test-fedsa-recording"

    def hooks(self, payload, local_state, method, state):
        self.hook = RecordStart(method)
        return [self.hook]


def test_fedsa_lora_on_the_tiny_model_keeps_each_clients_b(runtime):
    """Two rounds of client 0 (and one of client 1): B never on the wire, kept in the local state
    group "model"; round 2 starts from round 1's own B, not from the zeros of the init."""
    algo = RecordingFedSA()
    runtime._algorithms[algo.name] = algo
    x = dict(runtime.initial)
    b = keys_of(x, "B")
    assert b and all(not x[k].any() for k in b)
    payload, first = run(runtime, algo, 1, 0, x)
    assert not set(b) & set(payload.arrays[GLOBAL]) and not set(b) & set(first.arrays[STATE])
    own_b = first.local_state[MODEL]
    assert set(own_b) == set(b) and any(own_b[k].any() for k in b)
    _, other = run(runtime, algo, 1, 1, x)  # client 1 from its own (empty) local state
    assert any(not np.array_equal(other.local_state[MODEL][k], own_b[k]) for k in b)
    x2 = {**x, **first.arrays[STATE]}  # the global A after round 1 (one client's A)
    _, second = run(runtime, algo, 2, 0, x2, first.local_state)
    assert all(np.array_equal(algo.hook.start[k], own_b[k]) for k in b)  # started from its own B
    assert all(np.array_equal(algo.hook.start[k], x2[k]) for k in keys_of(x, "A"))  # and the global A
    assert any(not np.array_equal(second.local_state[MODEL][k], own_b[k]) for k in b)  # trained again
    assert not set(b) & set(second.arrays[STATE])


def test_fedsvd_on_the_tiny_model(runtime):
    """Two clients' real replies (B only, A frozen bit-identical), then the server's SVD
    refactorisation: B' A' = B_bar A to 1e-6 and A' A'^T = I on every layer."""
    algo = build_algorithm("fedsvd")
    x = dict(runtime.initial)
    a, b = keys_of(x, "A"), keys_of(x, "B")
    replies = []
    for pid in (0, 1):
        payload, update = run(runtime, algo, 1, pid, x)
        assert set(a) <= set(payload.arrays[GLOBAL]) and set(update.arrays[STATE]) == set(b)
        assert all(np.array_equal(live_state(runtime)[k], x[k]) for k in a)
        replies.append(P.validate_reply(pid, update.arrays, {P.NUM_EXAMPLES: update.num_examples + 2 * pid,
                                                             P.TRAIN_LOSS: 1.0, P.PARTITION_ID: pid},
                                        algo.expected(1, pid, x)))
    new = algo.aggregate(1, x, replies)
    w = np.asarray([r.num_examples for r in replies], np.float64)
    w /= w.sum()
    for ak in a:
        bk = ak.replace("lora_A", "lora_B")
        b_bar = sum(wk * r.arrays[STATE][bk].astype(np.float64) for wk, r in zip(w, replies))
        m = b_bar @ x[ak].astype(np.float64)
        assert record("fedsvd tiny B'A' = B_bar A", rel(new[bk].astype(np.float64) @ new[ak], m)) < 1e-6
        a_new = new[ak].astype(np.float64)
        ortho = float(np.abs(a_new @ a_new.T - np.eye(a_new.shape[0])).max())
        assert record("fedsvd tiny max|A'A'^T - I| (abs)", ortho) < 1e-6


# ---------------------------------------------------------------------------------------------
# (4) the contract of tests/test_algorithms.py on a LoRA-shaped state

LORA_SHAPES = {akey(p): (RANK, d_in) for p, (_, d_in) in LAYERS.items()}
LORA_SHAPES.update({bkey(p): (d_out, RANK) for p, (d_out, _) in LAYERS.items()})
LORA_SHAPES[EXTRA] = (5,)


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("name", NAMES)
def test_contract_on_a_lora_state(name, tmp_path):
    """Two rounds of our RoundLoop with the fake clients of tests/test_algorithms.py, killed in
    round 2 and resumed bit-identically, and the same result from Flower's Strategy.start; plus
    each rule's invariant on the final global state."""
    from test_algorithms import COUNTS as CLIENTS
    from test_algorithms import SYSTEM, Crash, assert_identical, flower_start, initial_state, run_loop

    x0 = initial_state(LORA_SHAPES)
    final, events, _, _, clients = run_loop(name, tmp_path / "ref", shapes=LORA_SHAPES)
    assert [e["round"] for e in events if e["event"] == "round"] == [1, 2]
    assert all(np.isfinite(v).all() and v.dtype == np.float32 for v in final.values())
    with pytest.raises(Crash):
        run_loop(name, tmp_path / "resumed", shapes=LORA_SHAPES, crash_in_round=2)
    resumed, events, _, _, _ = run_loop(name, tmp_path / "resumed", shapes=LORA_SHAPES)
    assert [e["round"] for e in events if e["event"] == "round"] == [2]
    assert_identical(resumed, final)
    out, _ = flower_start(name, tmp_path, shapes=LORA_SHAPES)
    assert_identical(out, final)
    assert not np.array_equal(final[EXTRA], x0[EXTRA])
    a, b = [akey(p) for p in LAYERS], [bkey(p) for p in LAYERS]
    moved = lambda k: not np.array_equal(final[k], x0[k])  # noqa: E731
    if name in ("fedit", "rolora"):
        assert all(moved(k) for k in a + b)
    elif name == "ffa_lora":
        assert not any(moved(k) for k in a) and all(moved(k) for k in b)
    elif name == "fedsa_lora":
        assert all(moved(k) for k in a) and not any(moved(k) for k in b)  # the global B untouched
        own = [clients.store.load(SYSTEM, pid, 3)[MODEL] for pid in range(len(CLIENTS))]
        assert all(set(o) == set(b) for o in own)
        assert not np.array_equal(own[0][b[0]], own[1][b[0]])  # each client its own B
    elif name == "fedsvd":
        for k in a:
            np.testing.assert_allclose(final[k] @ final[k].T, np.eye(RANK), atol=1e-6)


def test_report_errors(capsys):
    """Prints the largest relative errors the tests above measured (pytest -s shows them)."""
    with capsys.disabled():
        for name, err in sorted(ERRORS.items()):
            print(f"\n  {'min' if err < 0 else 'max'} relative error  {name}: {abs(err):.2e}", end="")
        print()
