"""Drift measures on hand-made updates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedmllm.federated import drift as D


def test_orthogonal_updates():
    g = {"w": np.zeros(2)}
    clients = [{"w": np.array([1.0, 0.0])}, {"w": np.array([0.0, 1.0])}]
    r = D.drift_report(g, clients)
    assert r["all.cosine_matrix"] == [[1.0, 0.0], [0.0, 1.0]]
    assert r["all.cosine_pairwise_mean"] == 0.0
    # mean update (0.5, 0.5): cos to it = 0.5 / (1 * sqrt(0.5)) = sqrt(0.5)
    np.testing.assert_allclose(r["all.cosine_to_mean"], [math.sqrt(0.5)] * 2)
    # B-local = sqrt((0.5*1 + 0.5*1) / 0.5) = sqrt(2)
    assert r["all.b_local"] == pytest.approx(math.sqrt(2))
    assert r["all.update_norm"] == [1.0, 1.0]


def test_identical_updates_have_b_local_one():
    g = {"a": np.ones((2, 2)), "b": np.zeros(3)}
    c = {"a": np.full((2, 2), 3.0), "b": np.array([1.0, 2.0, 2.0])}
    r = D.drift_report(g, [c, dict(c), dict(c)], weights=[1, 2, 5])
    assert r["all.b_local"] == pytest.approx(1.0)
    np.testing.assert_allclose(r["all.cosine_matrix"], np.ones((3, 3)))
    # ||Delta|| = sqrt(4*2^2 + 1 + 4 + 4) = 5
    np.testing.assert_allclose(r["all.update_norm"], [5.0] * 3)
    assert r["weights"] == pytest.approx([1 / 8, 2 / 8, 5 / 8])


def test_opposite_updates_and_zero_update_give_none_where_undefined():
    g = {"w": np.zeros(1)}
    r = D.drift_report(g, [{"w": np.array([1.0])}, {"w": np.array([-1.0])}])
    assert r["all.cosine_matrix"][0][1] == -1.0
    assert r["all.b_local"] is None  # the mean update is zero
    r = D.drift_report(g, [{"w": np.zeros(1)}])
    assert r["all.cosine_matrix"] == [[None]]
    json.dumps(r, allow_nan=False)  # JSON-serializable without NaN


def test_lora_discrepancy_one_by_one_factors():
    # clients: (B, A) = (1, 2) and (3, 4), p = 1/2 each:
    # sum p B A = (2 + 12) / 2 = 7; (sum p B)(sum p A) = 2 * 3 = 6 -> discrepancy 1, rel 1/7
    clients = [{"A": np.array([[2.0]]), "B": np.array([[1.0]])},
               {"A": np.array([[4.0]]), "B": np.array([[3.0]])}]
    total, rel = D.lora_discrepancy(clients, None, [("A", "B", 2.0)])
    assert total == pytest.approx(1.0)
    assert rel == pytest.approx(1 / 7)
    g = {"A": np.array([[1.0]]), "B": np.array([[0.0]])}
    r = D.drift_report(g, clients, None, [("A", "B", 2.0)])
    assert r["lora_discrepancy"] == pytest.approx(1.0)
    # dW_k - dW_0 = 2 * (B_k A_k - 0) = 4 and 24: both positive -> cosine 1; norms 4, 24
    np.testing.assert_allclose(r["lora_dW.update_norm"], [4.0, 24.0])
    assert r["lora_dW.cosine_matrix"][0][1] == pytest.approx(1.0)
    # A updates 1 and 3, B updates 1 and 3
    np.testing.assert_allclose(r["lora_A.update_norm"], [1.0, 3.0])
    np.testing.assert_allclose(r["lora_B.update_norm"], [1.0, 3.0])


def test_lowrank_gram_matches_explicit_products():
    rng = np.random.default_rng(0)
    layers = [("l0.A", "l0.B", 0.5), ("l1.A", "l1.B", 2.0)]
    shapes = {"l0.A": (3, 5), "l0.B": (4, 3), "l1.A": (2, 6), "l1.B": (7, 2)}
    states = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(4)]
    g0, clients, p = states[0], states[1:], np.array([0.2, 0.3, 0.5])
    dws = [np.concatenate([(s * (c[b] @ c[a] - g0[b] @ g0[a])).ravel() for a, b, s in layers])
           for c in clients]
    explicit = np.array([[u @ v for v in dws] for u in dws])
    np.testing.assert_allclose(D.lora_dw_gram(g0, clients, layers), explicit, rtol=1e-10)
    disc = sum(np.linalg.norm(sum(pk * c[b] @ c[a] for pk, c in zip(p, clients))
                              - sum(pk * c[b] for pk, c in zip(p, clients))
                              @ sum(pk * c[a] for pk, c in zip(p, clients)))
               for a, b, _ in layers)
    assert D.lora_discrepancy(clients, p, layers)[0] == pytest.approx(disc, rel=1e-9)


def test_weight_divergence_and_lora_pairs():
    # ||(3,5) - (3,4)|| / ||(3,4)|| = 1/5
    assert D.weight_divergence({"w": np.array([3.0, 5.0])}, {"w": np.array([3.0, 4.0])}) == \
        pytest.approx(0.2)
    keys = ["m.q.lora_A.weight", "m.q.lora_B.weight", "m.q.base_layer.weight"]
    assert D.find_lora_factors(keys, 2.0) == [("m.q.lora_A.weight", "m.q.lora_B.weight", 2.0)]
    with pytest.raises(ValueError, match="no matching"):
        D.find_lora_factors(["m.q.lora_A.weight"], 1.0)


def test_report_is_json_serializable():
    rng = np.random.default_rng(1)
    g = {"A": rng.normal(size=(2, 3)), "B": np.zeros((4, 2)), "bias": rng.normal(size=4)}
    clients = [{k: v + rng.normal(size=v.shape) for k, v in g.items()} for _ in range(3)]
    r = D.drift_report(g, clients, [3, 1, 1], [("A", "B", 1.0)])
    back = json.loads(json.dumps(r, allow_nan=False))
    assert back["num_clients"] == 3 and len(back["lora_dW.cosine_matrix"]) == 3
    assert r["all.b_local"] >= 1.0  # Jensen: sum p ||d||^2 >= ||sum p d||^2
