"""``fedit``: FedIT (Zhang et al. 2024, "Towards building the federated GPT: federated instruction
tuning", ICASSP 2024, arXiv 2305.05644: FedAvg of the LoRA adapters): every client trains both LoRA
factors and the server averages A and B *separately*,

    A <- sum_k p_k A_k,    B <- sum_k p_k B_k,    p_k = n_k / sum_j n_j.

The reference point of the LoRA aggregation rules: the new effective update s B_bar A_bar is not
the mean of the clients' updates sum_k p_k s B_k A_k (the cross terms p_j p_k B_j A_k, j != k, do
not cancel; `fedmllm.federated.lora.aggregation_error` measures the gap). The update rule is
`fedmllm.federated.aggregate.weighted_average`, i.e. FedAvg on the adapter state.
"""

from __future__ import annotations

from fedmllm.federated.algorithms.base import register_algorithm
from fedmllm.federated.algorithms.fedavg import FedAvg


@register_algorithm
class FedIT(FedAvg):
    """FedAvg on the LoRA factors A and B, each averaged on its own (inexact: B_bar A_bar)."""

    name = "fedit"
    description = "FedIT, Zhang et al. 2024 (FedAvg on LoRA's A and B separately)"
