"""``fedsa_lora``: FedSA-LoRA (Guo, Zeng, Wang, Fan, Wang, Qu, ICLR 2025, "Selective aggregation for
low-rank adaptation in federated learning", arXiv 2410.01463): the A factors learn what is general
across clients, the B factors what is client-specific, so only A is shared and averaged while each
client keeps its own B:

    A <- sum_k p_k A_k   (p_k = n_k / sum_j n_j),      B_k: client k's own, never uploaded.

Client k's model in round t is (B_k from its round t - 1, A_global); it trains both and uploads A_k
only. Messages: the payload carries A (and any non-LoRA key of the method's state, averaged as in
FedAvg), never B; the reply the trained A. B is a *local* key (`StatePlan.local`): the client keeps
it in its local state group "model" across rounds (the method's initial B = 0 before its first).

The global model's B stays at its initialisation (zeros), so the global model alone computes the
base model's function (s B A = 0): it is not the deliverable. FedSA-LoRA is personalized
(``personalized = True``): what counts is every client's own model (B_k, A) on its local test
split (``federated.eval_personalized``). Equal ranks only.
"""

from __future__ import annotations

from fedmllm.federated.algorithms.base import Algorithm, StatePlan, register_algorithm
from fedmllm.federated.algorithms.ffa_lora import b_keys


@register_algorithm
class FedSALoRA(Algorithm):
    """A shared and averaged, B kept on each client (personalized)."""

    name = "fedsa_lora"
    description = "FedSA-LoRA, Guo et al. ICLR 2025 (A <- sum_k p_k A_k; each client keeps its own B)"
    personalized = True

    def plan(self, client, shapes):
        """B local (trained, kept on the client, never sent), everything else shared."""
        local = set(b_keys(shapes))
        return StatePlan(shared=tuple(k for k in shapes if k not in local),
                         local=tuple(k for k in shapes if k in local))

    # configure / expected / aggregate: the base class's on the shared keys (A averaged, B kept);
    # client_plan: the base class's (B, not received, is local)
