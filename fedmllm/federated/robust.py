"""Byzantine-robust server aggregation rules as pure functions over ``dict[str, array]`` states.

Same conventions as ``aggregate.py``: a *state* maps parameter names to arrays (numpy arrays or
CPU torch tensors), arithmetic runs in float64, results are numpy arrays cast to the dtype of
the first client state's entries. No Flower, no Ray. Each rule is checked against Flower 1.42's
Message-API strategy (``flwr.serverapp.strategy``) in tests/test_robust.py; where Flower departs
from the paper, the docstring says so.

Sources (equations quoted beside each function):
- FedMedian / FedTrimmedAvg: Yin, Chen, Kannan, Bartlett 2018, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates" (ICML), Definitions 1-2 and Algorithm 1.
- Krum / Multi-Krum: Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning with
  Adversaries: Byzantine Tolerant Gradient Descent" (NeurIPS), Sec. 4 (Krum) and Sec. 5
  (Multi-Krum).
- Bulyan: El Mhamdi, Guerraoui, Rouault 2018, "The Hidden Vulnerability of Distributed Learning
  in Byzantium" (ICML), Sec. 4.
"""

from __future__ import annotations

import operator
from typing import Optional, Sequence

import numpy as np

from fedmllm.federated.aggregate import (
    NDState, State, _cast_like, _check_keys, _f64, normalize_weights)


def _stacked(states: Sequence[State]) -> dict[str, np.ndarray]:
    """Per key, the client values stacked on a new axis 0 (float64): shape ``(n, *shape)``."""
    if len(states) < 1:
        raise ValueError("need at least one client state to aggregate")
    _check_keys(states)
    f = [_f64(s) for s in states]
    out = {}
    for k in f[0]:
        shapes = {s[k].shape for s in f}
        if len(shapes) > 1:
            raise ValueError(f"client states disagree on the shape of {k!r}: {sorted(shapes)}")
        out[k] = np.stack([s[k] for s in f])
    return out


def _num_malicious(num_malicious: int) -> int:
    try:
        f = operator.index(num_malicious)
    except TypeError:
        raise ValueError(f"num_malicious must be an integer, got {num_malicious!r}") from None
    if f < 0:
        raise ValueError(f"num_malicious must be >= 0, got {f}")
    return f


def coordinate_median(states: Sequence[State]) -> NDState:
    """FedMedian: coordinate-wise median (Yin et al. 2018, Definition 1; Alg. 1 option I).

        g_k = med{ x^i_k : i in [m] }     for every coordinate k

    For an even number of clients the median is the mean of the two middle values (numpy's
    convention, also Flower's ``FedMedian``, which calls ``np.median`` on the stacked arrays;
    Flower computes in the arrays' dtype, this in float64). Unweighted, as in the paper and in
    Flower.
    """
    stacks = _stacked(states)
    return _cast_like({k: np.median(x, axis=0) for k, x in stacks.items()}, states[0])


def trimmed_mean(states: Sequence[State], beta: float) -> NDState:
    """FedTrimmedAvg: coordinate-wise beta-trimmed mean (Yin et al. 2018, Def. 2; Alg. 1 opt. II).

        g_k = 1 / ((1 - 2 beta) m) * sum_{x in U_k} x

    where U_k is {x^i_k} with its largest and smallest beta fraction removed, beta in [0, 1/2).
    The paper assumes beta*m is an integer; like Flower's ``trim_mean`` (after
    ``scipy.stats.trim_mean``) this cuts ``c = int(beta * m)`` values per tail (floor, computed
    in floating point exactly as Flower does) and averages the remaining m - 2c, so the divisor
    is m - 2c rather than (1 - 2 beta) m when beta*m is not an integer. Unweighted, as in both.
    """
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"beta must be in [0, 0.5), got {beta}")
    stacks = _stacked(states)
    n = len(states)
    cut = int(beta * n)
    out = {k: np.sort(x, axis=0)[cut:n - cut].mean(axis=0) for k, x in stacks.items()}
    return _cast_like(out, states[0])


def _sq_distances(stacks: dict[str, np.ndarray]) -> np.ndarray:
    """D[i, j] = ||V_i - V_j||^2 over all keys (float64, by direct differences)."""
    n = next(iter(stacks.values())).shape[0]
    d = np.zeros((n, n))
    for x in stacks.values():
        flat = x.reshape(n, -1)
        for i in range(n):
            d[i] += np.square(flat - flat[i]).sum(axis=1)
    return d


def _scores(d: np.ndarray, idx: Sequence[int], num_neighbours: int) -> np.ndarray:
    """Krum score of each member of ``idx`` within ``idx``: sum of its ``num_neighbours``
    smallest squared distances to the other members."""
    sub = d[np.ix_(idx, idx)]
    out = np.empty(len(idx))
    for a in range(len(idx)):
        others = np.delete(sub[a], a)
        out[a] = np.sort(others)[:num_neighbours].sum()
    return out


def _check_krum_n(n: int, f: int) -> None:
    if n < 2 * f + 3:
        raise ValueError(f"Krum needs n > 2f + 2 clients (Blanchard et al. 2017): got n={n} "
                         f"for num_malicious f={f}, need at least {2 * f + 3}")


def krum_scores(states: Sequence[State], num_malicious: int) -> np.ndarray:
    """Krum scores (Blanchard et al. 2017, Sec. 4), shape ``(n,)``, float64.

        s(i) = sum_{i -> j} ||V_i - V_j||^2

    where i -> j ranges over the n - f - 2 vectors V_j (j != i) closest to V_i, and V_i is
    client i's state flattened over all keys. Requires n > 2f + 2 (the paper's condition).
    Flower's ``select_multikrum`` computes the same score but does not check n: it uses
    max(1, n - f - 2) neighbours, so it runs for any n. It also forms distances as
    ||x||^2 + ||y||^2 - 2 x.y in the arrays' dtype and drops the first entry of each sorted row
    as "self"; this uses direct differences in float64 and excludes j = i explicitly (the same
    in exact arithmetic).
    """
    f = _num_malicious(num_malicious)
    stacks = _stacked(states)
    n = len(states)
    _check_krum_n(n, f)
    return _scores(_sq_distances(stacks), list(range(n)), n - f - 2)


def krum(states: Sequence[State], num_malicious: int, num_selected: int = 1,
         weights: Optional[Sequence[float]] = None) -> tuple[NDState, list[int]]:
    """Krum (m = 1) and Multi-Krum (m > 1) (Blanchard et al. 2017, Sec. 4 and Sec. 5).

        Krum:        V_{i*},  i* = argmin_i s(i)                 (s: see `krum_scores`)
        Multi-Krum:  (1/m) sum_{i in M} V_i,  M = the m indices with the lowest scores

    Returns ``(aggregate, selected)``: ``selected`` lists the chosen client indices from the
    lowest score up (ties go to the lower index). ``num_selected`` is m, 1 <= m <= n.

    ``weights`` (example counts) weight the Multi-Krum mean over the selected clients,
    p_i = w_i / sum_{j in M} w_j; ``None`` is the paper's uniform 1/m. Flower's ``MultiKrum``
    (and ``Krum``) always weight by the "num-examples" metric (``aggregate_arrayrecords``), so
    pass the example counts to reproduce it; for m = 1 weights make no difference.
    Flower does not validate m (m > n selects everyone) nor n against f (see `krum_scores`).
    """
    n = len(states)
    try:
        m = operator.index(num_selected)
    except TypeError:
        raise ValueError(f"num_selected must be an integer, got {num_selected!r}") from None
    if not 1 <= m <= max(n, 1):
        raise ValueError(f"num_selected must be in [1, n={n}], got {m}")
    w = normalize_weights(weights, n)
    scores = krum_scores(states, num_malicious)
    selected = [int(i) for i in np.argsort(scores, kind="stable")[:m]]
    ws = w[selected]
    if ws.sum() <= 0:
        raise ValueError(f"the selected clients {selected} all have zero weight")
    p = ws / ws.sum()
    f64 = [_f64(states[i]) for i in selected]
    avg = {k: sum(pk * s[k] for pk, s in zip(p, f64)) for k in f64[0]}
    return _cast_like(avg, states[0]), selected


def bulyan(states: Sequence[State], num_malicious: int,
           weights: Optional[Sequence[float]] = None, *,
           iterated: bool = False) -> tuple[NDState, list[int]]:
    """Bulyan (El Mhamdi et al. 2018, Sec. 4), requires n >= 4f + 3.

        1. Selection: S = theta = n - 2f clients chosen by a Byzantine-resilient rule (Krum).
        2. Per coordinate k: M_k = the beta = theta - 2f values of {V_i[k] : i in S} closest
           to their median, and G[k] = (1/beta) sum_{v in M_k} v.

    Returns ``(aggregate, selected)`` with ``selected`` the theta indices of S in selection
    order (for the default, from the lowest Krum score up); in both modes Krum ties go to the
    lower client index (with ``iterated=True`` they are common: with one neighbour, the closest
    pair always ties).

    Flower differs from the paper in step 1: its ``Bulyan`` (default ``selection_rule`` =
    ``select_multikrum``) takes the theta lowest Krum scores from ONE scoring of all n clients
    (Multi-Krum with m = theta), while the paper applies Krum recursively, each time to the
    clients not yet selected, and moves the winner to S. The default here is Flower's rule;
    ``iterated=True`` gives the paper's recursion (scores recomputed on the remaining set R
    with max(1, |R| - f - 2) neighbours, capped at |R| - 1, the clamp Flower uses, since
    |R| - f - 2 drops below 1 in the last steps). Step 2 is as in the paper and in Flower's
    ``aggregate_n_closest_weights`` (median = mean of the two middle values when theta is even).
    Flower picks the beta closest with ``np.argpartition``, so on exactly tied distances its
    choice is unspecified; here ties go to the earlier client in ``selected``.

    ``weights`` is accepted so every rule shares a call shape and is validated (length, >= 0),
    but it does not enter the aggregate: Bulyan is unweighted in the paper and in Flower (which
    uses the example counts only for the metrics of the selected clients).
    """
    f = _num_malicious(num_malicious)
    stacks = _stacked(states)
    n = len(states)
    if n < 4 * f + 3:
        raise ValueError(f"Bulyan needs n >= 4f + 3 clients (El Mhamdi et al. 2018): got n={n} "
                         f"for num_malicious f={f}, need at least {4 * f + 3}")
    normalize_weights(weights, n)  # validated only, see docstring
    theta, beta = n - 2 * f, n - 4 * f
    d = _sq_distances(stacks)
    if iterated:
        remaining, selected = list(range(n)), []
        for _ in range(theta):
            k = min(max(1, len(remaining) - f - 2), len(remaining) - 1)
            best = remaining[int(np.argmin(_scores(d, remaining, k)))] if k else remaining[0]
            selected.append(best)
            remaining.remove(best)
    else:
        scores = _scores(d, list(range(n)), n - f - 2)
        selected = [int(i) for i in np.argsort(scores, kind="stable")[:theta]]
    out = {}
    for key, x in stacks.items():
        sel = x[selected]  # (theta, *shape)
        med = np.median(sel, axis=0)
        idx = np.argsort(np.abs(sel - med), axis=0, kind="stable")[:beta]
        out[key] = np.take_along_axis(sel, idx, axis=0).mean(axis=0)
    return _cast_like(out, states[0]), selected


__all__ = ["coordinate_median", "trimmed_mean", "krum_scores", "krum", "bulyan"]


def _flat_delta(state: State, reference: State) -> np.ndarray:
    """state - reference over every key as one float64 vector (keys in ``state``'s order)."""
    return np.concatenate([(np.asarray(state[k], dtype=np.float64) - np.asarray(reference[k], dtype=np.float64)
                            ).ravel() for k in state]) if state else np.zeros(0)


def norm_bounded_mean(states: Sequence[State], weights: Sequence[float], global_state: State,
                      max_norm: float) -> tuple[NDState, list[float]]:
    """Norm bounding (Sun, Kairouz, Suresh, McMahan 2019, "Can You Really Backdoor Federated
    Learning?", Sec. 3): every client's update is clipped to L2 norm M before the weighted mean,

        w = w_g + sum_k p_k * d_k * min(1, M / ||d_k||),    d_k = w_k - w_g,

    with ``max_norm`` M; M <= 0 uses the median of the round's update norms (an adaptive bound:
    at most half the clients are clipped, so a few boosted updates cannot set it). Returns the
    new state (keys of ``states``) and the update norms before clipping.
    """
    stacks = _stacked(states)
    p = normalize_weights(weights, len(states))
    deltas = [_flat_delta(s, global_state) for s in states]
    norms = [float(np.linalg.norm(d)) for d in deltas]
    bound = float(max_norm) if max_norm > 0 else float(np.median(norms))
    scale = [min(1.0, bound / n) if n > 0 else 1.0 for n in norms]
    out = {}
    for k, x in stacks.items():
        g = np.asarray(global_state[k], dtype=np.float64)
        out[k] = g + sum(pk * sk * (x[i] - g) for i, (pk, sk) in enumerate(zip(p, scale)))
    return _cast_like(out, states[0]), norms


def fltrust(states: Sequence[State], global_state: State, reference: State) -> tuple[NDState, list[float]]:
    """FLTrust (Cao, Fang, Liu, Gong 2021, "FLTrust: Byzantine-robust Federated Learning via Trust
    Bootstrapping", NDSS, Alg. 1): with the server's own update g_0 on its small clean root set,

        TS_i = ReLU(cos(g_i, g_0)),    g_i' = g_i * ||g_0|| / ||g_i||,
        w = w_g + sum_i TS_i g_i' / sum_i TS_i,

    updates g = w - w_g over every key as one vector. Unweighted by example counts (the paper's
    trust scores replace them). When every trust score is 0 the global state is kept. Returns the
    new state and the trust scores.
    """
    stacks = _stacked(states)
    g0 = _flat_delta(reference, global_state) if reference else np.zeros(0)
    n0 = float(np.linalg.norm(g0))
    scores, factors = [], []
    for s in states:
        g = _flat_delta({k: s[k] for k in reference}, global_state)
        ng = float(np.linalg.norm(g))
        cos = float(g @ g0) / (ng * n0) if ng > 0 and n0 > 0 else 0.0
        scores.append(max(0.0, cos))
        factors.append(n0 / ng if ng > 0 else 0.0)
    total = sum(scores)
    out = {}
    for k, x in stacks.items():
        g = np.asarray(global_state[k], dtype=np.float64)
        if total <= 0:
            out[k] = g
        else:
            out[k] = g + sum(ts * f * (x[i] - g) for i, (ts, f) in enumerate(zip(scores, factors))) / total
    return _cast_like(out, states[0]), scores
