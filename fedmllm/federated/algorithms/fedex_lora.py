"""``fedex_lora``: FedEx-LoRA (Singhal, Ponkshe, Vepakomma, ACL 2025, "FedEx-LoRA: exact
aggregation for federated and efficient fine-tuning of foundation models", arXiv 2410.09432).

Exact aggregation with a residual (Sec. 4, the aggregation and residual-update equations): the
server sends the averaged adapters as the new global adapter and folds the part of the mean of
the products that the product of the means misses into the frozen base weight. Per LoRA layer,
with p_k = n_k / sum_j n_j (the paper averages uniformly over its equal-sized clients, 1/k; the
example-weighted mean is the same rule with FedAvg's weights) and s = alpha / r:

    A_bar = sum_k p_k A_k,     B_bar = sum_k p_k B_k
    R_{t+1} = R_t + s (sum_k p_k B_k A_k - B_bar A_bar)      (W0 + R: the frozen base weight)

so that R_{t+1} + s B_bar A_bar = R_t + sum_k p_k s B_k A_k exactly (no information lost; the
effective update is the ideal mean of the clients' effective updates). R lives in the global
state under ``<layer>lora_residual`` (`fedmllm.federated.lora`), zero at first; the payload
carries it (the runtimes set W = W0 + R) and the clients train B and A from (B_bar, A_bar).
Equal ranks only (the mean of factors needs one shape). Non-LoRA keys are averaged as in FedAvg.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from fedmllm.federated import lora
from fedmllm.federated.aggregate import normalize_weights
from fedmllm.federated.algorithms.base import register_algorithm
from fedmllm.federated.algorithms.flora import LoraAlgorithm


def fedex_aggregate(residual: Optional[np.ndarray], bs: Sequence[np.ndarray], as_: Sequence[np.ndarray],
                    weights: Sequence[float], scaling: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FedEx-LoRA on one layer: (R_new, B_bar, A_bar), float64, with B_bar = sum_k p_k B_k, A_bar =
    sum_k p_k A_k and R_new = R + s (sum_k p_k B_k A_k - B_bar A_bar)."""
    p = normalize_weights(weights, len(bs))
    b = [np.asarray(x, dtype=np.float64) for x in bs]
    a = [np.asarray(x, dtype=np.float64) for x in as_]
    b_bar = sum(pk * bk for pk, bk in zip(p, b))
    a_bar = sum(pk * ak for pk, ak in zip(p, a))
    mean_of_products = sum(pk * (bk @ ak) for pk, bk, ak in zip(p, b, a))
    delta = scaling * (mean_of_products - b_bar @ a_bar)
    r_new = delta if residual is None else np.asarray(residual, dtype=np.float64) + delta
    return r_new, b_bar, a_bar


@register_algorithm
class FedExLoRA(LoraAlgorithm):
    """Averaged adapters + the residual s (mean of products - product of means) in the base."""

    name = "fedex_lora"
    description = ("FedEx-LoRA, Singhal et al. ACL 2025 (B_bar, A_bar sent; R += s (sum_k p_k B_k A_k "
                   "- B_bar A_bar) merged into the base weight: exact)")
    uses_residuals = True

    def aggregate_lora(self, server_round, global_state, states, weights, prefixes):
        s = self.scaling()
        out = {}
        for p in prefixes:
            ak, bk, rk = lora.a_key(p), lora.b_key(p), lora.residual_key(p)
            out[rk], out[bk], out[ak] = fedex_aggregate(
                global_state.get(rk), [st[bk] for st in states], [st[ak] for st in states], weights, s)
        return out
