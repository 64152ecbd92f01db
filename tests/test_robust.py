"""Robust aggregation rules (fedmllm/federated/robust.py): hand values, equality with Flower 1.42's
Message-API strategies on random inputs, and error cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum

from fedmllm.federated import robust as R


pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


def w(*values, dtype=np.float64):
    """One-key states {"w": [v]} for 1-D hand examples."""
    return [{"w": np.array([v], dtype=dtype)} for v in values]


SHAPES = {"a": (3, 4), "b": (5,), "c": (2, 2, 2)}


def random_states(seed: int, n: int, dtype=np.float64, outliers: int = 1):
    """n clients around a common centre; the first ``outliers`` ones are pushed far away."""
    rng = np.random.default_rng(seed)
    centre = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    states = []
    for i in range(n):
        scale = 8.0 if i < outliers else 1.0
        states.append({k: (c + scale * rng.normal(size=c.shape)).astype(dtype)
                       for k, c in centre.items()})
    counts = [int(c) for c in rng.integers(1, 100, size=n)]
    return states, counts


def contents(states, counts):
    return [RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in s.items()}),
                        "metrics": MetricRecord({"num-examples": c})})
            for s, c in zip(states, counts)]


def replies(states, counts):
    """Fresh reply Messages (Flower's strategies pop arrays out of them, so build per call)."""
    out = []
    for i, content in enumerate(contents(states, counts)):
        ins = Message(RecordDict(), dst_node_id=101 + i, message_type=MessageType.TRAIN)
        out.append(Message(content, reply_to=ins))
    return out


def flower(strategy, states, counts):
    arrays, _ = strategy.aggregate_train(1, replies(states, counts))
    return None if arrays is None else {k: a.numpy() for k, a in arrays.items()}


def assert_state_close(ours, theirs, rtol=1e-6, atol=0.0):
    assert set(ours) == set(theirs)
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype, k
        np.testing.assert_allclose(ours[k], theirs[k], rtol=rtol, atol=atol, err_msg=k)


# ---------------------------------------------------------------------------------------------
# (1) hand-computed values


def test_coordinate_median_hand_values():
    # 5 clients 1, 2, 3, 4, 100: the median is 3, the outlier does not matter
    assert R.coordinate_median(w(1, 2, 3, 4, 100))["w"].tolist() == [3.0]
    # 4 clients (even): coordinate 0 sorted 1, 2, 3, 5 -> (2 + 3) / 2 = 2.5;
    #                   coordinate 1 sorted 0, 2, 7, 10 -> (2 + 7) / 2 = 4.5
    states = [{"m": np.array(v, dtype=np.float32)} for v in ([1, 10], [5, 0], [3, 7], [2, 2])]
    out = R.coordinate_median(states)
    assert out["m"].dtype == np.float32 and out["m"].tolist() == [2.5, 4.5]


def test_trimmed_mean_hand_values():
    s = w(1, 2, 3, 4, 100)
    # beta = 0.2, n = 5: int(1.0) = 1 cut per tail -> mean(2, 3, 4) = 3
    assert R.trimmed_mean(s, 0.2)["w"].tolist() == [3.0]
    # beta = 0.3: int(1.5) = 1 (floor, as Flower) -> still 3
    assert R.trimmed_mean(s, 0.3)["w"].tolist() == [3.0]
    # beta = 0.1: int(0.5) = 0 -> plain mean (1 + 2 + 3 + 4 + 100) / 5 = 22; beta = 0 too
    assert R.trimmed_mean(s, 0.1)["w"].tolist() == [22.0]
    assert R.trimmed_mean(s, 0.0)["w"].tolist() == [22.0]
    # per coordinate: col 0 = 9, 1, 5, 3, 7 -> drop 1, 9 -> mean(3, 5, 7) = 5;
    #                 col 1 = 0, -4, 2, 8, 1 -> drop -4, 8 -> mean(0, 1, 2) = 1
    cols = [[9, 0], [1, -4], [5, 2], [3, 8], [7, 1]]
    out = R.trimmed_mean([{"m": np.array(c, dtype=np.float32)} for c in cols], 0.2)
    assert out["m"].dtype == np.float32 and out["m"].tolist() == [5.0, 1.0]


# Values 0, 1, 3, 4, 20 with f = 1, n = 5: n - f - 2 = 2 nearest others (squared distances)
#   0: 1 (to 1) + 9 (to 3) = 10        1: 1 (to 0) + 4 (to 3) = 5      3: 4 (to 1) + 1 (to 4) = 5
#   4: 9 (to 1) + 1 (to 3) = 10        20: 256 (to 4) + 289 (to 3) = 545
KRUM_VALUES = (0, 1, 3, 4, 20)


def test_krum_scores_and_selection_hand_values():
    s = w(*KRUM_VALUES)
    assert R.krum_scores(s, 1).tolist() == [10.0, 5.0, 5.0, 10.0, 545.0]
    # Krum: clients 1 and 2 tie at 5 -> the lower index wins -> value 1
    out, sel = R.krum(s, 1)
    assert sel == [1] and out["w"].tolist() == [1.0]
    # Multi-Krum m = 3: order 1 (5), 2 (5), 0 (10) -> uniform mean (1 + 3 + 0) / 3 = 4/3
    out, sel = R.krum(s, 1, num_selected=3)
    assert sel == [1, 2, 0]
    np.testing.assert_allclose(out["w"], [4 / 3])
    # weighted by example counts 1, 3, 1, 1, 1: clients 1, 2, 0 weigh 3, 1, 1
    #   -> (3 * 1 + 1 * 3 + 1 * 0) / 5 = 1.2
    out, _ = R.krum(s, 1, num_selected=3, weights=[1, 3, 1, 1, 1])
    np.testing.assert_allclose(out["w"], [1.2])


def test_krum_sums_distances_over_keys():
    # two keys: client i has a = [x_i], b = [y_i]; distance = (dx)^2 + (dy)^2
    # points (0,0), (1,0), (0,2), (9,9), (1,1), f = 1, n = 5 -> 2 nearest
    #   (0,0): 1 (1,0) + 2 (1,1) = 3      (1,0): 1 (0,0) + 1 (1,1) = 2
    #   (0,2): 2 (1,1) + 4 (0,0) = 6      (9,9): 128 (1,1) + 130 (0,2) = 258
    #   (1,1): 1 (1,0) + 2 (0,0 or 0,2) = 3
    pts = [(0, 0), (1, 0), (0, 2), (9, 9), (1, 1)]
    s = [{"a": np.array([x], dtype=float), "b": np.array([y], dtype=float)} for x, y in pts]
    assert R.krum_scores(s, 1).tolist() == [3.0, 2.0, 6.0, 258.0, 3.0]
    out, sel = R.krum(s, 1)
    assert sel == [1] and (out["a"][0], out["b"][0]) == (1.0, 0.0)


# Values 0, 3, 4, 5, 6, 8, 9 (indices 0..6), f = 1, n = 7: theta = 5, beta = 3, 4 nearest:
#   0: 9+16+25+36 = 86   3: 1+4+9+9 = 23   4: 1+1+4+16 = 22   5: 1+1+4+9 = 15
#   6: 1+4+4+9 = 18      8: 1+4+9+16 = 30  9: 1+9+16+25 = 51
BULYAN_VALUES = (0, 3, 4, 5, 6, 8, 9)


def test_bulyan_hand_values_flower_selection():
    # one scoring, the 5 lowest: 5 (15), 6 (18), 4 (22), 3 (23), 8 (30) -> indices 3, 4, 2, 1, 5
    # median of {5, 6, 4, 3, 8} = 5; |v - 5| = 0, 1, 1, 2, 3 -> closest 3: 5, 6, 4 -> mean 5
    out, sel = R.bulyan(w(*BULYAN_VALUES), 1)
    assert sel == [3, 4, 2, 1, 5] and out["w"].tolist() == [5.0]


def test_bulyan_hand_values_paper_iterated_selection():
    # Krum on the remaining set R, k = max(1, |R| - f - 2) nearest, winner moves to S:
    #   |R|=7, k=4: scores as above -> 5 (idx 3)
    #   |R|=6 {0,3,4,6,8,9}, k=3: 0: 9+16+36=61, 3: 1+9+9=19, 4: 1+4+16=21, 6: 4+4+9=17,
    #                             8: 1+4+16=21, 9: 1+9+25=35 -> 6 (idx 4)
    #   |R|=5 {0,3,4,8,9}, k=2: 0: 25, 3: 1+9=10, 4: 1+16=17, 8: 1+16=17, 9: 26 -> 3 (idx 1)
    #   |R|=4 {0,4,8,9}, k=1: 16, 16, 1, 1 -> tie, lower index -> 8 (idx 5)
    #   |R|=3 {0,4,9}, k=1: 16, 16, 25 -> tie, lower index -> 0 (idx 0)
    # S = {5, 6, 3, 8, 0}: median 5; |v - 5| = 0, 1, 2, 3, 5 -> closest 3: 5, 6, 3 -> 14/3
    out, sel = R.bulyan(w(*BULYAN_VALUES), 1, iterated=True)
    assert sel == [3, 4, 1, 5, 0]
    np.testing.assert_allclose(out["w"], [14 / 3])


def test_bulyan_outlier_is_ignored_and_weights_do_not_matter():
    # f = 1, n = 7, a far outlier (1000): it is never selected; the result stays in [1, 6]
    s = w(1, 2, 3, 4, 5, 6, 1000)
    out, sel = R.bulyan(s, 1)
    assert 6 not in sel and 1 <= out["w"][0] <= 6
    out_w, sel_w = R.bulyan(s, 1, weights=[1, 2, 3, 4, 5, 6, 7])
    assert sel_w == sel and out_w["w"].tolist() == out["w"].tolist()


def test_torch_tensors_and_dtype_of_first_state():
    # torch float32 in, numpy float32 out; same numbers as numpy input
    vals = (0.0, 1.0, 3.0, 4.0, 20.0)
    t = [{"w": torch.tensor([v])} for v in vals]
    n = w(*vals, dtype=np.float32)
    for fn in (R.coordinate_median, lambda s: R.trimmed_mean(s, 0.2),
               lambda s: R.krum(s, 1, 2)[0]):
        a, b = fn(t), fn(n)
        assert a["w"].dtype == np.float32 and a["w"].tolist() == b["w"].tolist()
    # bfloat16 tensors come back as float32 (numpy has no bfloat16)
    bf = [{"w": torch.tensor([v], dtype=torch.bfloat16)} for v in vals]
    assert R.coordinate_median(bf)["w"].tolist() == [3.0]


# ---------------------------------------------------------------------------------------------
# (2) equality with Flower on random inputs

SEEDS = [0, 1, 2, 3]


@pytest.mark.parametrize("n", [6, 7])
@pytest.mark.parametrize("seed", SEEDS)
def test_median_matches_flower(seed, n):
    states, counts = random_states(seed, n)
    assert_state_close(R.coordinate_median(states), flower(FedMedian(), states, counts))


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 0.3, 0.45])
@pytest.mark.parametrize("seed", SEEDS)
def test_trimmed_mean_matches_flower(seed, beta):
    states, counts = random_states(seed, 7)
    ours = R.trimmed_mean(states, beta)
    assert_state_close(ours, flower(FedTrimmedAvg(beta=beta), states, counts))
    for k in SHAPES:  # Flower's pure helper, too
        np.testing.assert_allclose(ours[k], trim_mean(np.stack([s[k] for s in states]), beta),
                                   rtol=1e-6)


@pytest.mark.parametrize("n,f", [(7, 1), (9, 2), (10, 3)])
@pytest.mark.parametrize("seed", SEEDS)
def test_krum_selection_matches_flower(seed, n, f):
    states, counts = random_states(seed, n, outliers=f)
    ctnt = contents(states, counts)
    for m in (1, 3, n - f):
        theirs = select_multikrum(ctnt, num_malicious_nodes=f, num_nodes_to_select=m)
        _, sel = R.krum(states, f, num_selected=m)
        assert sel == [next(i for i, c in enumerate(ctnt) if c is t) for t in theirs]
        assert not set(sel) & set(range(f))  # the pushed-away clients are never chosen


@pytest.mark.parametrize("n,f", [(7, 1), (9, 2)])
@pytest.mark.parametrize("seed", SEEDS)
def test_krum_and_multikrum_aggregate_match_flower(seed, n, f):
    states, counts = random_states(seed, n, outliers=f)
    ours, _ = R.krum(states, f, weights=counts)
    assert_state_close(ours, flower(Krum(num_malicious_nodes=f), states, counts))
    assert_state_close(R.krum(states, f)[0], ours)  # m = 1: weights make no difference
    for m in (2, 4):
        mk = MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m)
        theirs = flower(mk, states, counts)
        ours, _ = R.krum(states, f, num_selected=m, weights=counts)
        assert_state_close(ours, theirs)  # Flower weights the mean by num-examples
        uniform, _ = R.krum(states, f, num_selected=m)
        assert not np.allclose(uniform["a"], theirs["a"])  # ... not the paper's 1/m


@pytest.mark.parametrize("n,f", [(7, 1), (8, 1), (11, 2), (12, 2)])
@pytest.mark.parametrize("seed", SEEDS)
def test_bulyan_matches_flower(seed, n, f):
    states, counts = random_states(seed, n, outliers=f)
    ours, sel = R.bulyan(states, f, weights=counts)
    assert_state_close(ours, flower(Bulyan(num_malicious_nodes=f), states, counts))
    # the pieces: Flower's selection (Multi-Krum, m = theta) and its coordinate-wise step
    ctnt = contents(states, counts)
    theta = n - 2 * f
    picked = select_multikrum(ctnt, f, theta)
    assert sel == [next(i for i, c in enumerate(ctnt) if c is t) for t in picked]
    chosen = [[states[i][k] for k in SHAPES] for i in sel]
    median = [np.median(np.stack(layer), axis=0) for layer in zip(*chosen)]
    for k, ref in zip(SHAPES, aggregate_n_closest_weights(median, chosen, theta - 2 * f)):
        np.testing.assert_allclose(ours[k], ref, rtol=1e-6)


def test_float32_inputs_match_flower_computing_in_float32():
    # Flower works in the arrays' dtype (float32 here), this in float64 then casts back
    for seed in SEEDS:
        states, counts = random_states(seed, 7, dtype=np.float32)
        tol = dict(rtol=1e-5, atol=1e-6)
        assert_state_close(R.coordinate_median(states), flower(FedMedian(), states, counts))
        assert_state_close(R.trimmed_mean(states, 0.2),
                           flower(FedTrimmedAvg(beta=0.2), states, counts), **tol)
        assert_state_close(R.krum(states, 1, 3, weights=counts)[0],
                           flower(MultiKrum(num_malicious_nodes=1, num_nodes_to_select=3),
                                  states, counts), **tol)
        assert_state_close(R.bulyan(states, 1)[0],
                           flower(Bulyan(num_malicious_nodes=1), states, counts), **tol)


def test_iterated_bulyan_can_differ_from_flower():
    # the paper's recursive Krum is not Flower's one-shot Multi-Krum (hand example above)
    s = w(*BULYAN_VALUES)
    theirs = flower(Bulyan(num_malicious_nodes=1), s, [1] * 7)
    assert theirs["w"].tolist() == R.bulyan(s, 1)[0]["w"].tolist() == [5.0]
    assert R.bulyan(s, 1, iterated=True)[0]["w"].tolist() != [5.0]


# ---------------------------------------------------------------------------------------------
# (3) error cases


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7])
def test_trimmed_mean_rejects_beta(beta):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 0.5\)"):
        R.trimmed_mean(w(1, 2, 3), beta)
    with pytest.raises(ValueError):  # Flower rejects the same values
        FedTrimmedAvg(beta=beta)


def test_krum_errors():
    s = w(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"n > 2f \+ 2.*n=4.*f=1.*at least 5"):
        R.krum_scores(s, 1)
    with pytest.raises(ValueError, match=r"n > 2f \+ 2"):
        R.krum(s, 1)
    R.krum(s, 0)  # n = 4 >= 2*0 + 3
    with pytest.raises(ValueError, match="num_malicious must be >= 0"):
        R.krum(s, -1)
    with pytest.raises(ValueError, match="num_malicious must be an integer"):
        R.krum(s, 0.5)
    with pytest.raises(ValueError, match=r"num_selected must be in \[1, n=4\]"):
        R.krum(s, 0, num_selected=0)
    with pytest.raises(ValueError, match=r"num_selected must be in \[1, n=4\]"):
        R.krum(s, 0, num_selected=5)
    with pytest.raises(ValueError, match="expected 4 weights"):
        R.krum(s, 0, weights=[1, 2])
    with pytest.raises(ValueError, match="all have zero weight"):
        R.krum(w(0, 1, 2, 50), 0, num_selected=2, weights=[0, 0, 0, 1])


def test_bulyan_errors():
    s = w(1, 2, 3, 4, 5, 6)
    with pytest.raises(ValueError, match=r"n >= 4f \+ 3.*n=6.*f=1.*at least 7"):
        R.bulyan(s, 1)
    # Flower does not raise: it logs a warning and returns no arrays
    assert flower(Bulyan(num_malicious_nodes=1), s, [1] * 6) is None
    with pytest.raises(ValueError, match="expected 7 weights"):
        R.bulyan(w(*BULYAN_VALUES), 1, weights=[1, 2, 3])
    with pytest.raises(ValueError, match="num_malicious must be >= 0"):
        R.bulyan(s, -1)


@pytest.mark.parametrize("fn", [R.coordinate_median, lambda s: R.trimmed_mean(s, 0.1),
                                lambda s: R.krum(s, 0), lambda s: R.bulyan(s, 0)])
def test_inconsistent_or_empty_states(fn):
    with pytest.raises(ValueError, match="at least one"):
        fn([])
    with pytest.raises(ValueError, match="different keys"):
        fn([{"a": np.zeros(2)}, {"a": np.zeros(2)}, {"b": np.zeros(2)}])
    with pytest.raises(ValueError, match="shape of 'a'"):
        fn([{"a": np.zeros(2)}, {"a": np.zeros(2)}, {"a": np.zeros(3)}])
