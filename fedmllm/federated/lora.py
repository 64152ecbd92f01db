"""LoRA-aware federated maths on numpy factors, shared by the LoRA aggregation rules.

Notation (per adapted layer): client k holds B_k (d_out x r_k) and A_k (r_k x d_in), weight
p_k = n_k / sum n, one scaling s (= alpha / r of the global adapter, kept for every client rank
so that truncating or padding an adapter never rescales its update), effective update
dW = s B A. A *residual* R (d_out x d_in) is an update already merged into the frozen base weight
(FLoRA, FedEx-LoRA): the layer computes (W0 + R + s B A) x. It travels in the global state under
`residual_key` and the runtimes (`fedmllm.federated.tuned`) add it to the base weight.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

A_SUFFIX, B_SUFFIX = "lora_A.weight", "lora_B.weight"
RESIDUAL_SUFFIX = "lora_residual"  # R of the layer: an update merged into its base weight
RESIDUAL_FILE = "lora_residual.safetensors"  # a saved adapter's residuals, beside its state


def layers(keys: Sequence[str], strict: bool = True) -> list[str]:
    """The layer prefixes (``"...q_proj."``) of every LoRA A key whose B twin is present; an A
    without its B raises unless ``strict`` is False (partial states: FFA-LoRA, FedSA-LoRA uploads)."""
    present = set(keys)
    out = []
    for key in keys:
        if key.endswith("." + A_SUFFIX):
            prefix = key[: -len(A_SUFFIX)]
            if prefix + B_SUFFIX not in present:
                if strict:
                    raise ValueError(f"LoRA factor {key!r} has no matching {prefix + B_SUFFIX!r}")
                continue
            out.append(prefix)
    return out


def a_key(prefix: str) -> str:
    return prefix + A_SUFFIX


def b_key(prefix: str) -> str:
    return prefix + B_SUFFIX


def residual_key(prefix: str) -> str:
    return prefix + RESIDUAL_SUFFIX


def is_residual(key: str) -> bool:
    return key.endswith("." + RESIDUAL_SUFFIX)


def rank_of(state: Mapping[str, np.ndarray]) -> int:
    """The LoRA rank of a state (rows of its A factors; all layers must agree)."""
    ranks = {int(np.shape(state[a_key(p)])[0]) for p in layers(list(state))}
    if len(ranks) != 1:
        raise ValueError(f"a LoRA state needs one rank over its layers, got {sorted(ranks)}")
    return ranks.pop()


def effective_update(state: Mapping[str, np.ndarray], prefix: str, scaling: float) -> np.ndarray:
    """R + s B A of one layer (float64); R = 0 when the state carries no residual."""
    b = np.asarray(state[b_key(prefix)], dtype=np.float64)
    a = np.asarray(state[a_key(prefix)], dtype=np.float64)
    dw = scaling * (b @ a)
    r = state.get(residual_key(prefix))
    return dw if r is None else dw + np.asarray(r, dtype=np.float64)


def truncate(state: Mapping[str, np.ndarray], rank: int) -> dict[str, np.ndarray]:
    """The rank-``rank`` part of a LoRA state: A[:rank], B[:, :rank] (other keys as they are)."""
    out = dict(state)
    for p in layers(list(state)):
        out[a_key(p)] = np.ascontiguousarray(state[a_key(p)][:rank])
        out[b_key(p)] = np.ascontiguousarray(state[b_key(p)][:, :rank])
    return out


def zero_pad(state: Mapping[str, np.ndarray], rank: int) -> dict[str, np.ndarray]:
    """A LoRA state padded with zero rows of A / columns of B up to ``rank`` (HetLoRA)."""
    out = dict(state)
    for p in layers(list(state)):
        a, b = np.asarray(state[a_key(p)]), np.asarray(state[b_key(p)])
        extra = rank - a.shape[0]
        if extra < 0:
            raise ValueError(f"cannot zero-pad a rank-{a.shape[0]} adapter to rank {rank}")
        out[a_key(p)] = np.concatenate([a, np.zeros((extra, a.shape[1]), a.dtype)], axis=0)
        out[b_key(p)] = np.concatenate([b, np.zeros((b.shape[0], extra), b.dtype)], axis=1)
    return out


def svd_factors(delta: np.ndarray, rank: int, scaling: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, A) of rank ``rank`` with s B A = the best rank-``rank`` approximation of ``delta``:
    delta = U S V^T, B = U_r S_r^(1/2) / sqrt(s), A = S_r^(1/2) V_r^T / sqrt(s) (FlexLoRA's split
    of the singular values between the factors, scaled so the layer's s B A reproduces it)."""
    u, sv, vt = np.linalg.svd(np.asarray(delta, dtype=np.float64), full_matrices=False)
    root = np.sqrt(sv[:rank] / scaling)
    return u[:, :rank] * root, root[:, None] * vt[:rank]


def aggregation_error(new_state: Mapping[str, np.ndarray], client_states: Sequence[Mapping[str, np.ndarray]],
                      weights: Sequence[float], scaling: float) -> tuple[float, float | None]:
    """(sum_l ||dW_new - sum_k p_k dW_k||_F, that / sum_l ||sum_k p_k dW_k||_F): how far the
    aggregated effective update is from the example-weighted mean of the clients' effective
    updates (0 for the exact rules; the LoRA aggregation discrepancy for FedIT). Layers are
    those of ``new_state``; client states must hold both factors of each (any ranks)."""
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    err = ref = 0.0
    for prefix in layers(list(new_state)):
        target = sum(pk * effective_update(s, prefix, scaling) for pk, s in zip(p, client_states))
        err += float(np.linalg.norm(effective_update(new_state, prefix, scaling) - target))
        ref += float(np.linalg.norm(target))
    return err, (err / ref if ref > 1e-30 else None)
