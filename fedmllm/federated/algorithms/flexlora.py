"""``flexlora``: FlexLoRA (Bai, Chen, Qian, Yao, Li, NeurIPS 2024, "Federated fine-tuning of large
language models under heterogeneous tasks and client resources", arXiv 2402.11505).

Full-size aggregation and SVD redistribution (Sec. 3, the aggregation and SVD equations): per
LoRA layer, with p_k = n_k / sum_j n_j (the paper weights clients by their data size),

    dW = sum_k p_k s B_k A_k                       (the full-size global update)
    dW = U S V^T                                   (SVD)
    global adapter: the best rank-r_g approximation, client k: the best rank-r_k approximation
    B = U_r S_r^(1/2) / sqrt(s),  A = S_r^(1/2) V_r^T / sqrt(s)    (`lora.svd_factors`)

so s B A = U_r S_r V_r^T (Eckart-Young: the best rank-r approximation of dW in Frobenius norm).
The scaling cancels (the factors are those of the rank-r part of dW / s = sum_k p_k B_k A_k), so
the server needs no s.
The paper fixes the product, not how S is split between the factors; the balanced split (B^T B
= A A^T) is `lora.svd_factors`'s. As the singular triplets come sorted, client k's rank-r_k
adapter is the global adapter truncated to r_k (`lora.truncate`, done by `configure`).

dW has rank <= sum_k r_k, so `flexlora_factors` computes its SVD from the stacked factors
(dW = s [B_1..B_K][p_1 A_1; ..; p_K A_K]) by two thin QRs and the SVD of a small matrix, in
O((d_out + d_in) (sum_k r_k)^2) instead of O(d_out d_in min(d_out, d_in)) for the dense SVD; the
result is the same (tests compare it with ``np.linalg.svd`` of the dense dW). Heterogeneous ranks
allowed. Non-LoRA keys are averaged as in FedAvg.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedmllm.federated import lora
from fedmllm.federated.algorithms.base import register_algorithm
from fedmllm.federated.algorithms.flora import LoraAlgorithm, flora_stack


def flexlora_update(bs: Sequence[np.ndarray], as_: Sequence[np.ndarray], weights: Sequence[float],
                    scaling: float) -> np.ndarray:
    """dW = sum_k p_k s B_k A_k, dense (float64; any ranks)."""
    b, a = flora_stack(bs, as_, weights)
    return scaling * (b @ a)


def product_svd(b: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD (U, S, V^T) of B A from B (d_out x m) and A (m x d_in) without forming B A:
    B = Q_b R_b, A^T = Q_a R_a, B A = Q_b (R_b R_a^T) Q_a^T, R_b R_a^T = u S v^T, so
    U = Q_b u, V^T = v^T Q_a^T (singular values descending, as ``np.linalg.svd``)."""
    qb, rb = np.linalg.qr(np.asarray(b, dtype=np.float64))
    qa, ra = np.linalg.qr(np.asarray(a, dtype=np.float64).T)
    u, sv, vt = np.linalg.svd(rb @ ra.T, full_matrices=False)
    return qb @ u, sv, vt @ qa.T


def flexlora_factors(bs: Sequence[np.ndarray], as_: Sequence[np.ndarray], weights: Sequence[float],
                     rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, A) of rank ``rank`` with s B A = the best rank-``rank`` approximation of dW = sum_k p_k s
    B_k A_k for every s (s cancels: dW / s = sum_k p_k B_k A_k), split as `lora.svd_factors`
    does; zero columns / rows beyond the rank of dW."""
    b, a = flora_stack(bs, as_, weights)
    u, sv, vt = product_svd(b, a)  # dW = s u diag(sv) vt
    k = min(rank, sv.shape[0])
    root = np.sqrt(sv[:k])  # svd_factors' sqrt(sigma(dW) / s), sigma(dW) = s sv
    b_new = np.zeros((b.shape[0], rank))
    a_new = np.zeros((rank, a.shape[1]))
    b_new[:, :k] = u[:, :k] * root
    a_new[:k] = root[:, None] * vt[:k]
    return b_new, a_new


@register_algorithm
class FlexLoRA(LoraAlgorithm):
    """dW = sum_k p_k s B_k A_k; the global adapter is its rank-r_g SVD truncation."""

    name = "flexlora"
    description = ("FlexLoRA, Bai et al. NeurIPS 2024 (dW = sum_k p_k s B_k A_k; SVD; rank-r "
                   "truncation per client)")
    heterogeneous_ranks = True

    def aggregate_lora(self, server_round, global_state, states, weights, prefixes):
        out = {}
        for p in prefixes:
            ak, bk = lora.a_key(p), lora.b_key(p)
            rank = np.shape(global_state[ak])[0]
            out[bk], out[ak] = flexlora_factors([st[bk] for st in states], [st[ak] for st in states],
                                                weights, rank)
        return out
