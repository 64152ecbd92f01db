"""``fedsvd``: FedSVD (Lee, Park, Lee, Wagner, Seong, Bocklet, Lee, Hwang, NeurIPS 2025, "FedSVD:
adaptive orthogonalization for private federated learning with LoRA", arXiv 2505.12805): clients
train only B with A frozen (as FFA-LoRA); the server averages B and refactorises the aggregated
update by an SVD, so that A becomes the orthonormal right singular vectors of B_bar A:

    B_bar = sum_k p_k B_k,    B_bar A = U S V^T (thin SVD),    A <- V_r^T,    B <- U_r S_r

(p_k = n_k / sum_j n_j, r the LoRA rank). The new factors give the same update, B A = B_bar A
(exact aggregation, as A was common), with orthonormal rows of A (A A^T = I).

`fedsvd_refactor` computes that SVD in O((d_out + d_in) r^2) rather than O(d_out d_in min(d_out,
d_in)): with A^T = Q R (thin QR), B_bar A = (B_bar R^T) Q^T and B_bar R^T = U S W^T (d_out x r), so
B_bar A = U S (Q W)^T is the thin SVD (V_r = Q W). Mind the public bug of FedLLM-Factory: it takes
``V[:r, :]`` after ``torch.svd``, which returns V, not V^T (rows of V are not singular vectors);
numpy's ``svd`` returns V^T, whose first r rows are V_r^T (used here).

Messages: the payload carries both factors (A changes every round, so the clients need it; frozen
on the client) and any non-LoRA key of the method's state (averaged as in FedAvg); the reply
carries B only. Equal ranks only.
"""

from __future__ import annotations

import numpy as np

from fedmllm.federated.algorithms.base import GLOBAL, Payload, register_algorithm
from fedmllm.federated.algorithms.ffa_lora import FFALoRA
from fedmllm.federated.lora import a_key, b_key, layers


def fedsvd_refactor(b_bar: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B', A') with B' A' = ``b_bar`` @ ``a`` (float64): B_bar A = U S V^T, A' = V_r^T (orthonormal
    rows), B' = U_r S_r; r = rows of ``a`` (needs r <= d_in; when d_out < r, B' has zero columns
    beyond d_out and A' completes V's rows to an orthonormal set)."""
    b, a = np.asarray(b_bar, dtype=np.float64), np.asarray(a, dtype=np.float64)
    r, d_in = a.shape
    if r > d_in:
        raise ValueError(f"FedSVD needs rank <= the layer's input size, got r = {r} > d_in = {d_in}")
    q, rr = np.linalg.qr(a.T)  # a = rr^T q^T, q: d_in x r with orthonormal columns
    m = b @ rr.T  # d_out x r: b a = m q^T
    u, sv, wt = np.linalg.svd(m, full_matrices=b.shape[0] < r)  # wt: r x r when full or d_out >= r
    k = sv.shape[0]
    b_new = np.zeros((b.shape[0], r))
    b_new[:, :k] = u[:, :k] * sv
    return b_new, wt @ q.T


@register_algorithm
class FedSVD(FFALoRA):
    """FFA-LoRA's clients (A frozen, B trained and uploaded); the server re-bases A on the SVD."""

    name = "fedsvd"
    description = "FedSVD, Lee et al. NeurIPS 2025 (B averaged; B_bar A = U S V^T, A <- V_r^T, B <- U_r S_r)"

    def configure(self, server_round, client, global_state):
        """The whole global state: A (frozen on the client) changes every round."""
        return Payload({GLOBAL: dict(global_state)}, self.client_config(server_round))

    def aggregate(self, server_round, global_state, replies):
        """B_bar = sum_k p_k B_k (FFA-LoRA's), then per layer `fedsvd_refactor` (B_bar, A_old)."""
        out = super().aggregate(server_round, global_state, replies)
        for prefix in layers(list(out)):
            ak, bk = a_key(prefix), b_key(prefix)
            b_new, a_new = fedsvd_refactor(out[bk], global_state[ak])
            out[bk] = b_new.astype(np.asarray(global_state[bk]).dtype)
            out[ak] = a_new.astype(np.asarray(global_state[ak]).dtype)
        return out
