"""Client-drift measures over one round's client updates.

Definitions (sources beside each), with Delta_k = y_k - x the update of client k from the global
state x it started from, and p_k = n_k / sum_j n_j:

- update norm ||Delta_k||;
- pairwise cosine cos(Delta_k, Delta_j) and cosine to the weighted mean update sum_j p_j Delta_j;
- B-local dissimilarity sqrt(sum_k p_k ||Delta_k||^2 / ||sum_k p_k Delta_k||^2) (Li et al. 2020,
  FedProx, Definition 3; 1 when all updates are equal, larger as they disagree);
- for LoRA, the same for the A factors, the B factors and the effective dW = scaling * B @ A;
- LoRA aggregation discrepancy sum_layers ||sum_k p_k B_k A_k - (sum_k p_k B_k)(sum_k p_k A_k)||_F:
  what averaging A and B separately loses against averaging the products (FedSA-LoRA / FFA-LoRA
  discussions);
- weight divergence ||w_FL - w_C|| / ||w_C|| against a centralized model (Zhao et al. 2018).

Everything is computed from Gram matrices G_kj = <Delta_k, Delta_j>, so the dW measures never
materialize a d_out x d_in matrix: <B_i A_i, B_j A_j>_F = sum((B_i^T B_j) * (A_i A_j^T)).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from fedmllm.federated.aggregate import State, normalize_weights, subtract, to_numpy

LoraFactors = Sequence[tuple[str, str, float]]  # (a_key, b_key, scaling) per adapted layer
_EPS = 1e-30


def gram(deltas: Sequence[State], keys: Optional[Sequence[str]] = None) -> np.ndarray:
    """G_kj = <Delta_k, Delta_j> summed over ``keys`` (all keys of the first delta if None)."""
    keys = list(deltas[0]) if keys is None else list(keys)
    g = np.zeros((len(deltas), len(deltas)))
    for key in keys:  # one key at a time: never one K x (all parameters) matrix
        mat = np.stack([to_numpy(d[key]).astype(np.float64).ravel() for d in deltas])
        g += mat @ mat.T
    return g


def measures_from_gram(g: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Norms, cosines and B-local dissimilarity from a Gram matrix (None where undefined)."""
    sq = np.clip(np.diag(g), 0.0, None)
    norms = np.sqrt(sq)
    mean_sq = float(max(p @ g @ p, 0.0))  # ||sum p_k Delta_k||^2
    to_mean = g @ p  # <Delta_k, sum_j p_j Delta_j>
    k = len(p)
    cos = [[_ratio(g[i, j], norms[i] * norms[j]) for j in range(k)] for i in range(k)]
    off = [cos[i][j] for i in range(k) for j in range(k) if i != j and cos[i][j] is not None]
    return {
        "update_norm": norms.tolist(),
        "update_norm_mean": float(p @ norms),
        "mean_update_norm": float(np.sqrt(mean_sq)),
        "cosine_matrix": cos,
        "cosine_pairwise_mean": float(np.mean(off)) if off else None,
        "cosine_to_mean": [_ratio(to_mean[i], norms[i] * np.sqrt(mean_sq)) for i in range(k)],
        "b_local": (float(np.sqrt(float(p @ sq) / mean_sq)) if mean_sq > _EPS else None),
    }


def _ratio(num: float, den: float) -> Optional[float]:
    return float(np.clip(num / den, -1.0, 1.0)) if den > _EPS else None


def lowrank_inner(b1: np.ndarray, a1: np.ndarray, b2: np.ndarray, a2: np.ndarray) -> float:
    """<B1 @ A1, B2 @ A2>_F without forming the products (trace identity)."""
    return float(np.sum((b1.T @ b2) * (a1 @ a2.T)))


def lora_dw_gram(global_before: State, client_states: Sequence[State],
                 lora_factors: LoraFactors) -> np.ndarray:
    """Gram matrix of dW updates, dW_k - dW_0 = s (B_k A_k - B_0 A_0), summed over layers."""
    k = len(client_states)
    g = np.zeros((k, k))
    for a_key, b_key, scaling in lora_factors:
        states = [global_before, *client_states]  # index 0 is the global state
        a = [to_numpy(s[a_key]).astype(np.float64) for s in states]
        b = [to_numpy(s[b_key]).astype(np.float64) for s in states]
        h = np.array([[lowrank_inner(b[i], a[i], b[j], a[j]) for j in range(k + 1)]
                      for i in range(k + 1)])
        g += scaling ** 2 * (h[1:, 1:] - h[1:, :1] - h[:1, 1:] + h[0, 0])
    return g


def lora_discrepancy(client_states: Sequence[State], weights: Optional[Sequence[float]],
                     lora_factors: LoraFactors) -> tuple[float, Optional[float]]:
    """(sum_l ||sum p B A - (sum p B)(sum p A)||_F, that sum / sum_l ||sum p B A||_F).

    Unscaled (the LoRA scaling multiplies both terms alike). Each layer's difference is the
    low-rank product [p_1 B_1 .. p_K B_K, -B_bar] @ [A_1; ..; A_K; A_bar].
    """
    p = normalize_weights(weights, len(client_states))
    total, ref = 0.0, 0.0
    for a_key, b_key, _ in lora_factors:
        a = [to_numpy(s[a_key]).astype(np.float64) for s in client_states]
        b = [to_numpy(s[b_key]).astype(np.float64) for s in client_states]
        a_bar = sum(pk * ak for pk, ak in zip(p, a))
        b_bar = sum(pk * bk for pk, bk in zip(p, b))
        u = np.concatenate([pk * bk for pk, bk in zip(p, b)] + [-b_bar], axis=1)
        v = np.concatenate(a + [a_bar], axis=0)
        total += float(np.sqrt(max(lowrank_inner(u, v, u, v), 0.0)))
        u0, v0 = u[:, :-b_bar.shape[1]], v[:-a_bar.shape[0]]
        ref += float(np.sqrt(max(lowrank_inner(u0, v0, u0, v0), 0.0)))
    return total, (total / ref if ref > _EPS else None)


def weight_divergence(w_fl: State, w_c: State) -> Optional[float]:
    """||w_FL - w_C|| / ||w_C|| over all keys of ``w_c`` (Zhao et al. 2018, "Federated Learning
    with Non-IID Data"); None if ||w_C|| = 0."""
    diff = subtract({k: w_fl[k] for k in w_c}, w_c)
    num = np.sqrt(sum(float(np.sum(d ** 2)) for d in diff.values()))
    den = np.sqrt(sum(float(np.sum(to_numpy(v).astype(np.float64) ** 2)) for v in w_c.values()))
    return float(num / den) if den > _EPS else None


def find_lora_factors(keys: Sequence[str], scaling: float) -> list[tuple[str, str, float]]:
    """(a_key, b_key, scaling) for every ``*.lora_A.*`` key whose ``*.lora_B.*`` twin exists.

    Pairs by exact replacement of the ``.lora_A.`` path segment, never by substring search.
    """
    present = set(keys)
    pairs = []
    for key in keys:
        if ".lora_A." in key:
            twin = key.replace(".lora_A.", ".lora_B.", 1)
            if twin not in present:
                raise ValueError(f"LoRA factor {key!r} has no matching {twin!r}")
            pairs.append((key, twin, float(scaling)))
    return pairs


def drift_report(global_before: State, client_states: Sequence[State],
                 weights: Optional[Sequence[float]] = None,
                 lora_factors: LoraFactors = ()) -> dict[str, Any]:
    """All drift measures of one round as JSON-serializable values.

    Keys: ``num_clients``, ``weights`` (normalized p_k), then ``all.<measure>`` over the whole
    state and, when ``lora_factors`` is given, ``lora_A.<measure>``, ``lora_B.<measure>``,
    ``lora_dW.<measure>``, ``lora_discrepancy`` and ``lora_discrepancy_rel``. Measures are those
    of `measures_from_gram` (``cosine_matrix`` as nested lists); undefined values (a zero update)
    are None.
    """
    if not client_states:
        raise ValueError("drift_report needs at least one client state")
    p = normalize_weights(weights, len(client_states))
    deltas = [subtract(s, global_before) for s in client_states]
    report: dict[str, Any] = {"num_clients": len(client_states), "weights": p.tolist()}
    groups = {"all": gram(deltas)}
    if lora_factors:
        groups["lora_A"] = gram(deltas, [a for a, _, _ in lora_factors])
        groups["lora_B"] = gram(deltas, [b for _, b, _ in lora_factors])
        groups["lora_dW"] = lora_dw_gram(global_before, client_states, lora_factors)
    for name, g in groups.items():
        for measure, value in measures_from_gram(g, p).items():
            report[f"{name}.{measure}"] = value
    if lora_factors:
        report["lora_discrepancy"], report["lora_discrepancy_rel"] = lora_discrepancy(
            client_states, p, lora_factors)
    return report
