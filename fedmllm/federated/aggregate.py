"""Server update rules as pure functions over ``dict[str, array]`` states.

A *state* maps parameter names to arrays (numpy arrays or CPU torch tensors; results are numpy).
Arithmetic runs in float64; returned model states take the dtype of the global state's entries
(or of the first client state), optimizer moments stay float64. No Flower, no Ray: the strategies
in ``fedmllm/federated/algorithms/`` call these, and so can a test.

Sources (equations quoted beside each function):
- FedAvg: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", Algorithm 1.
- FedAvgM: Hsu, Qi, Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for
  Federated Visual Classification", Section 3.
- FedAdagrad / FedAdam / FedYogi: Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR),
  Algorithm 2.
- SCAFFOLD: Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated
  Learning" (ICML), Algorithm 1.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

State = Mapping[str, Any]
NDState = dict[str, np.ndarray]


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of an array-like (torch tensors are detached and moved to CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def contiguous(x: Any) -> np.ndarray:
    """A C-contiguous numpy array of ``x`` with its shape kept: a 0-d array stays 0-d
    (``np.ascontiguousarray`` returns at least 1-d, which broke SCAFFOLD on a scalar entry)."""
    return np.require(to_numpy(x), requirements="C")


def _f64(state: State) -> NDState:
    return {k: to_numpy(v).astype(np.float64) for k, v in state.items()}


def _cast_like(state: NDState, like: State) -> NDState:
    """Cast to the dtype of ``like`` where that dtype is floating (integer buffers stay float)."""
    out = {}
    for k, v in state.items():
        dtype = to_numpy(like[k]).dtype
        out[k] = v.astype(dtype) if np.issubdtype(dtype, np.floating) else v
    return out


def _check_keys(states: Sequence[State], what: str = "client state") -> None:
    keys = list(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))[:5]
            raise ValueError(f"{what} {i} has different keys than {what} 0 (e.g. {diff})")


def normalize_weights(weights: Optional[Sequence[float]], n: int) -> np.ndarray:
    """p_k = w_k / sum_j w_j; ``None`` means uniform 1/n. Negative or all-zero weights raise."""
    if n < 1:
        raise ValueError("need at least one state to aggregate")
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"expected {n} weights, got {w.shape[0] if w.ndim else 'a scalar'}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {w.tolist()}")
    return w / w.sum()


def weighted_average(states: Sequence[State], weights: Optional[Sequence[float]] = None) -> NDState:
    """FedAvg (McMahan et al. 2017, Alg. 1): w = sum_k (n_k / n) w_k.

    ``weights`` are the n_k (example counts) or ``None`` for a uniform mean.
    """
    _check_keys(states)
    p = normalize_weights(weights, len(states))
    f = [_f64(s) for s in states]
    avg = {k: sum(pk * s[k] for pk, s in zip(p, f)) for k in f[0]}
    return _cast_like(avg, states[0])


def subtract(a: State, b: State) -> NDState:
    """a - b per key (float64), e.g. a client update Delta_k = y_k - x."""
    _check_keys([a, b], "state")
    fa, fb = _f64(a), _f64(b)
    return {k: fa[k] - fb[k] for k in fa}


def fedavgm(global_state: State, average: State, momentum: Optional[State] = None, *,
            server_lr: float = 1.0, server_momentum: float = 0.9) -> tuple[NDState, NDState]:
    """FedAvgM server step (Hsu et al. 2019, Sec. 3), PyTorch-SGD convention.

    Pseudo-gradient g = x - avg (avg = FedAvg of client models); v <- beta v + g (v_0 = 0,
    so the first v equals g); x <- x - server_lr * v. Returns ``(new_global, new_momentum)``.
    This is also what Flower's ``FedAvgM`` computes (checked in tests/test_strategies.py).
    """
    x, avg = _f64(global_state), _f64(average)
    v = _f64(momentum) if momentum is not None else {k: np.zeros_like(a) for k, a in x.items()}
    v = {k: server_momentum * v[k] + (x[k] - avg[k]) for k in x}
    new = {k: x[k] - server_lr * v[k] for k in x}
    return _cast_like(new, global_state), v


# Reddi et al. 2021, Algorithm 2, lines for v_t (d2 = Delta_t^2, elementwise):
#   FedAdagrad: v_t = v_{t-1} + Delta_t^2
#   FedAdam:    v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2
#   FedYogi:    v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2)
SECOND_MOMENT: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "adagrad": lambda v, d2, b2: v + d2,
    "adam": lambda v, d2, b2: b2 * v + (1.0 - b2) * d2,
    "yogi": lambda v, d2, b2: v - (1.0 - b2) * d2 * np.sign(v - d2),
}


def fedopt(rule: str, global_state: State, average: State, m: Optional[State],
           v: Optional[State], *, eta: float, beta_1: float, beta_2: float, tau: float,
           v_init: Optional[float] = None) -> tuple[NDState, NDState, NDState]:
    """One server step of Reddi et al. 2021, Algorithm 2 (``rule``: adagrad, adam or yogi).

        Delta_t = avg - x_t            (avg of client models = x_t + avg of client updates)
        m_t     = beta1 m_{t-1} + (1 - beta1) Delta_t,    m_{-1} = 0
        v_t     = SECOND_MOMENT[rule](v_{-1}, Delta_t^2),  v_{-1} = v_init (>= tau^2; default tau^2)
        x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)

    No bias correction (the paper has none). The paper averages client updates uniformly
    (1/|S|); the strategies pass the FedAvg example-weighted average, equal for equal sizes.
    Deviations elsewhere, documented so results can be compared: OpenFedLLM
    (federated_learning/fed_global.py) sets m_0 = Delta_0 in round 0, computes v for FedAdam and
    FedYogi from m_t^2 instead of Delta_t^2, and drops momentum in FedAdagrad; Flower 1.41's
    FedOpt family starts from v_{-1} = 0 and its FedAdam multiplies eta by the Adam bias
    correction sqrt(1 - beta2^(t+1)) / (1 - beta1^(t+1)).
    Returns ``(new_global, m_t, v_t)``.
    """
    if rule not in SECOND_MOMENT:
        raise ValueError(f"unknown FedOpt rule {rule!r}; valid: {', '.join(SECOND_MOMENT)}")
    x, avg = _f64(global_state), _f64(average)
    _check_keys([x, avg], "state")
    v0 = tau ** 2 if v_init is None else float(v_init)
    m_prev = _f64(m) if m is not None else {k: np.zeros_like(a) for k, a in x.items()}
    v_prev = _f64(v) if v is not None else {k: np.full_like(a, v0) for k, a in x.items()}
    delta = {k: avg[k] - x[k] for k in x}
    m_t = {k: beta_1 * m_prev[k] + (1.0 - beta_1) * delta[k] for k in x}
    v_t = {k: SECOND_MOMENT[rule](v_prev[k], delta[k] ** 2, beta_2) for k in x}
    new = {k: x[k] + eta * m_t[k] / (np.sqrt(v_t[k]) + tau) for k in x}
    return _cast_like(new, global_state), m_t, v_t


def fedadagrad(global_state: State, average: State, m: Optional[State], v: Optional[State],
               **hp: Any) -> tuple[NDState, NDState, NDState]:
    """FedAdagrad: `fedopt` with v_t = v_{t-1} + Delta_t^2 (``beta_2`` is unused)."""
    hp.setdefault("beta_2", 0.0)
    return fedopt("adagrad", global_state, average, m, v, **hp)


def fedadam(global_state: State, average: State, m: Optional[State], v: Optional[State],
            **hp: Any) -> tuple[NDState, NDState, NDState]:
    """FedAdam: `fedopt` with v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2."""
    return fedopt("adam", global_state, average, m, v, **hp)


def fedyogi(global_state: State, average: State, m: Optional[State], v: Optional[State],
            **hp: Any) -> tuple[NDState, NDState, NDState]:
    """FedYogi: `fedopt` with v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2)."""
    return fedopt("yogi", global_state, average, m, v, **hp)


def scaffold_server_update(global_state: State, c_global: State, client_states: Sequence[State],
                           client_dcs: Sequence[State], num_clients: int, *,
                           server_lr: float = 1.0, weights: Optional[Sequence[float]] = None
                           ) -> tuple[NDState, NDState]:
    """SCAFFOLD server step (Karimireddy et al. 2020, Alg. 1, lines 16-17).

        Delta x = mean_{i in S} (y_i - x)      x <- x + eta_g Delta x
        Delta c = (1/|S|) sum_{i in S} dc_i    c <- c + (|S| / N) Delta c

    ``client_states`` are the y_i, ``client_dcs`` the dc_i = c_i+ - c_i, ``num_clients`` is N.
    ``weights`` (example counts) weight the model mean like FedAvg; ``None`` is the paper's
    uniform mean. The control mean is always uniform: c must stay the mean of all N c_i.
    Returns ``(new_global, new_c)``.
    """
    if len(client_states) != len(client_dcs):
        raise ValueError(f"{len(client_states)} client states but {len(client_dcs)} dc's")
    if num_clients < len(client_states):
        raise ValueError(f"num_clients N={num_clients} < {len(client_states)} participants")
    _check_keys([global_state, c_global, *client_states, *client_dcs], "state")
    x, c = _f64(global_state), _f64(c_global)
    avg = _f64(weighted_average(client_states, weights))
    dc_mean = _f64(weighted_average(client_dcs, None))
    frac = len(client_dcs) / num_clients
    new_x = {k: x[k] + server_lr * (avg[k] - x[k]) for k in x}
    new_c = {k: c[k] + frac * dc_mean[k] for k in c}
    return _cast_like(new_x, global_state), _cast_like(new_c, c_global)


def scaffold_client_control(c_local: State, c_global: State, global_state: State,
                            local_state: State, local_steps: int, local_lr: float
                            ) -> tuple[NDState, NDState]:
    """SCAFFOLD client control update, option II (Karimireddy et al. 2020, Alg. 1, line 12).

        c_i+ = c_i - c + (x - y_i) / (K eta_l),     dc_i = c_i+ - c_i

    ``global_state`` is x (received), ``local_state`` is y_i after K = ``local_steps`` steps of
    lr eta_l = ``local_lr``. Returns ``(c_i+, dc_i)``; the client keeps c_i+ for its next round.
    """
    if local_steps < 1 or local_lr <= 0:
        raise ValueError(f"need local_steps >= 1 and local_lr > 0, got {local_steps}, {local_lr}")
    _check_keys([c_local, c_global, global_state, local_state], "state")
    ci, c, x, y = _f64(c_local), _f64(c_global), _f64(global_state), _f64(local_state)
    c_plus = {k: ci[k] - c[k] + (x[k] - y[k]) / (local_steps * local_lr) for k in x}
    dc = {k: c_plus[k] - ci[k] for k in x}
    return _cast_like(c_plus, c_local), _cast_like(dc, c_local)


def scaffold_correction(c_local: State, c_global: State) -> NDState:
    """The term added to every local gradient: y <- y - eta_l (g(y) - c_i + c) (Alg. 1, line 10)."""
    _check_keys([c_local, c_global], "state")
    ci, c = _f64(c_local), _f64(c_global)
    return _cast_like({k: c[k] - ci[k] for k in c}, c_local)
