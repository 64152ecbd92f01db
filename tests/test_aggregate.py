"""Server update rules against hand-computed values and the papers' equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmllm.federated import aggregate as A


def test_weighted_average_hand_values():
    a = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    b = {"w": np.array([3.0, 6.0], dtype=np.float32)}
    # p = (1/4, 3/4): 0.25*[1,2] + 0.75*[3,6] = [2.5, 5.0]
    out = A.weighted_average([a, b], [1, 3])
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    assert out["w"].dtype == np.float32
    # uniform: [2, 4]
    np.testing.assert_allclose(A.weighted_average([a, b])["w"], [2.0, 4.0])
    # torch tensors are accepted too
    t = A.weighted_average([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}])
    np.testing.assert_allclose(t["w"], [2.0, 4.0])


def test_weighted_average_rejects_bad_input():
    with pytest.raises(ValueError, match="different keys"):
        A.weighted_average([{"a": np.zeros(1)}, {"b": np.zeros(1)}])
    with pytest.raises(ValueError, match="positive sum"):
        A.weighted_average([{"a": np.zeros(1)}], [0])
    with pytest.raises(ValueError, match="expected 2 weights"):
        A.weighted_average([{"a": np.zeros(1)}, {"a": np.zeros(1)}], [1])


def test_fedavgm_two_rounds_hand_values():
    # Hsu et al. 2019, lr 1, beta 0.9. Round 1: x=1, avg=0.5 -> g=0.5, v=0.5, x=0.5.
    x, v = A.fedavgm({"w": np.array([1.0])}, {"w": np.array([0.5])}, None,
                     server_lr=1.0, server_momentum=0.9)
    np.testing.assert_allclose(x["w"], [0.5])
    np.testing.assert_allclose(v["w"], [0.5])
    # Round 2: avg=0.25 -> g=0.25, v=0.9*0.5+0.25=0.7, x=0.5-0.7=-0.2.
    x, v = A.fedavgm(x, {"w": np.array([0.25])}, v, server_lr=1.0, server_momentum=0.9)
    np.testing.assert_allclose(x["w"], [-0.2])
    np.testing.assert_allclose(v["w"], [0.7])


def test_fedadagrad_first_round_hand_value_with_default_v_init():
    # tau=0.5 -> v_{-1}=tau^2=0.25; Delta=1.2 -> v=0.25+1.44=1.69, sqrt=1.3; beta1=0 -> m=1.2;
    # x = 0 + 0.9*1.2/(1.3+0.5) = 0.6
    x, m, v = A.fedadagrad({"w": np.array([0.0])}, {"w": np.array([1.2])}, None, None,
                           eta=0.9, beta_1=0.0, tau=0.5)
    np.testing.assert_allclose(v["w"], [1.69])
    np.testing.assert_allclose(m["w"], [1.2])
    np.testing.assert_allclose(x["w"], [0.6])


@pytest.mark.parametrize("rule", ["adam", "yogi"])
def test_fedadam_fedyogi_first_round_hand_value(rule):
    # v_init=0, beta1=0.5, beta2=0.75, tau=0.25, eta=1, Delta=2:
    # m = 0.5*2 = 1; adam: v = 0.25*4 = 1; yogi: v = 0 - 0.25*4*sign(0-4) = 1
    # x = 0 + 1*1/(1+0.25) = 0.8
    x, m, v = A.fedopt(rule, {"w": np.array([0.0])}, {"w": np.array([2.0])}, None, None,
                       eta=1.0, beta_1=0.5, beta_2=0.75, tau=0.25, v_init=0.0)
    np.testing.assert_allclose([m["w"][0], v["w"][0], x["w"][0]], [1.0, 1.0, 0.8])


def reddi_reference(rule, x0, deltas, eta, beta_1, beta_2, tau):
    """Reddi et al. 2021 Algorithm 2 on Python floats for one coordinate, given each round's
    averaged client update Delta_t; m_{-1} = 0, v_{-1} = tau^2. Returns x_1 .. x_T."""
    x, m, v, xs = x0, 0.0, tau ** 2, []
    for d in deltas:
        m = beta_1 * m + (1 - beta_1) * d
        if rule == "adagrad":
            v = v + d * d
        elif rule == "adam":
            v = beta_2 * v + (1 - beta_2) * d * d
        else:  # yogi
            v = v - (1 - beta_2) * d * d * float(np.sign(v - d * d))
        x = x + eta * m / (math.sqrt(v) + tau)
        xs.append(x)
    return xs


@pytest.mark.parametrize("rule", ["adagrad", "adam", "yogi"])
def test_fedopt_three_rounds_match_algorithm_2(rule):
    hp = dict(eta=0.1, beta_1=0.9, beta_2=0.5, tau=1e-3)
    # averaged client update per round, coordinate 0 (twice that for coordinate 1); the small
    # later updates make v_{t-1} > Delta_t^2, so FedYogi's sign(.) takes both values
    deltas = [0.3, 0.01, -0.2]
    x, m, v, got, vs = {"w": np.array([1.0, -2.0])}, None, None, [], []
    for d in deltas:
        avg = {"w": x["w"] + np.array([d, 2 * d])}  # client average = x_t + Delta_t
        x, m, v = A.fedopt(rule, x, avg, m, v, **hp)
        got.append(x["w"].copy())
        vs.append(v["w"][0])
    if rule == "yogi":
        assert vs[2] < vs[1] < vs[0]  # grew from tau^2 in round 1 (sign -), then shrank (sign +)
    for coord, (x0, scale) in enumerate([(1.0, 1.0), (-2.0, 2.0)]):
        ref = reddi_reference(rule, x0, [scale * d for d in deltas], **hp)
        np.testing.assert_allclose([g[coord] for g in got], ref, rtol=1e-12)


def test_fedopt_rejects_unknown_rule():
    with pytest.raises(ValueError, match="unknown FedOpt rule"):
        A.fedopt("sgd", {"w": np.zeros(1)}, {"w": np.zeros(1)}, None, None,
                 eta=1, beta_1=0, beta_2=0, tau=1)


def test_scaffold_server_update_hand_values():
    x, c = {"w": np.array([1.0])}, {"w": np.array([0.0])}
    ys = [{"w": np.array([0.0])}, {"w": np.array([0.5])}]
    dcs = [{"w": np.array([0.2])}, {"w": np.array([0.4])}]
    # uniform: Delta x = (-1 - 0.5)/2 = -0.75 -> x = 0.25; Delta c = 0.3, |S|/N = 2/4 -> c = 0.15
    new_x, new_c = A.scaffold_server_update(x, c, ys, dcs, num_clients=4)
    np.testing.assert_allclose([new_x["w"][0], new_c["w"][0]], [0.25, 0.15])
    # example-weighted model mean (1, 3): 0.25*(-1) + 0.75*(-0.5) = -0.625 -> x = 0.375;
    # eta_g = 2 -> x = 1 - 1.25 = -0.25; the control mean stays uniform
    new_x, new_c = A.scaffold_server_update(x, c, ys, dcs, 4, server_lr=2.0, weights=[1, 3])
    np.testing.assert_allclose([new_x["w"][0], new_c["w"][0]], [-0.25, 0.15])
    with pytest.raises(ValueError, match="num_clients"):
        A.scaffold_server_update(x, c, ys, dcs, num_clients=1)


def test_scaffold_client_control_option_two_hand_values():
    # c_i=0.1, c=0.3, x=1.0, y=0.8, K=4, lr=0.1: (x-y)/(K lr) = 0.5 -> c_i+ = 0.1-0.3+0.5 = 0.3
    c_plus, dc = A.scaffold_client_control({"w": np.array([0.1])}, {"w": np.array([0.3])},
                                           {"w": np.array([1.0])}, {"w": np.array([0.8])},
                                           local_steps=4, local_lr=0.1)
    np.testing.assert_allclose([c_plus["w"][0], dc["w"][0]], [0.3, 0.2])


def test_scaffold_option_two_equals_mean_local_gradient():
    # With corrected steps y <- y - lr (g(y) - c_i + c), option II gives c_i+ = mean_k g(y_k).
    a, b, lr, steps = 3.0, 1.0, 0.05, 7
    grad = lambda y: a * y - b  # noqa: E731  (f(y) = a y^2 / 2 - b y)
    x, ci, c = np.array([2.0]), {"w": np.array([0.4])}, {"w": np.array([-0.1])}
    corr = A.scaffold_correction(ci, c)["w"]
    np.testing.assert_allclose(corr, [-0.5])  # c - c_i
    y, grads = x.copy(), []
    for _ in range(steps):
        grads.append(grad(y))
        y = y - lr * (grad(y) + corr)
    c_plus, _ = A.scaffold_client_control(ci, c, {"w": x}, {"w": y}, steps, lr)
    np.testing.assert_allclose(c_plus["w"], np.mean(grads, axis=0), rtol=1e-12)
