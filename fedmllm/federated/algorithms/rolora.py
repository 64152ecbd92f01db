"""``rolora``: RoLoRA (Chen, Guo, Ju, Dalal, Zhu, Khisti, NeurIPS 2025, "Robust federated
finetuning of LLMs via alternating optimization of LoRA", arXiv 2502.01755): the clients train one
LoRA factor per round with the other frozen at its global value, alternating between rounds:

    odd round t:   A frozen (common), B_k trained;  B <- sum_k p_k B_k,  A kept
    even round t:  B frozen (common), A_k trained;  A <- sum_k p_k A_k,  B kept

(p_k = n_k / sum_j n_j). The frozen factor is the same on every client, so each round's
aggregation is exact: s B_bar A = sum_k p_k s B_k A (odd), s B A_bar = sum_k p_k s B A_k (even).
B goes first: LoRA starts from B = 0, where A's gradient is zero.

Messages: the payload carries the whole global adapter (both factors: the client needs the frozen
one too) and the config key ``rolora-phase`` = "B" or "A", the factor trained this round, which the
client half reads (`client_plan`); the reply carries only the trained factor (and any non-LoRA key
of the method's state, averaged every round as in FedAvg), half the adapter's upload. A state with
no LoRA factor gets no phase key and is plain FedAvg. Equal ranks only.
"""

from __future__ import annotations

from fedmllm.federated.algorithms.base import (
    GLOBAL, STATE, Algorithm, Payload, StatePlan, register_algorithm)
from fedmllm.federated.algorithms.ffa_lora import a_keys, b_keys

PHASE = "rolora-phase"  # config key: the factor the clients train this round, "A" or "B"


def rolora_phase(server_round: int) -> str:
    """The factor trained in ``server_round``: "B" in odd rounds (first: B starts at 0), "A" in even."""
    return "B" if server_round % 2 == 1 else "A"


def frozen_factor(keys, phase: str) -> list[str]:
    """The LoRA keys frozen in a round of ``phase`` (the other factor's)."""
    if phase not in ("A", "B"):
        raise ValueError(f"{PHASE} must be 'A' or 'B', got {phase!r}")
    return a_keys(keys) if phase == "B" else b_keys(keys)


@register_algorithm
class RoLoRA(Algorithm):
    """One LoRA factor trained and averaged per round, the other frozen; alternating (exact)."""

    name = "rolora"
    description = "RoLoRA, Chen et al. NeurIPS 2025 (alternating: odd rounds train/average B, even rounds A)"

    def configure(self, server_round, client, global_state):
        """Both factors go down; the phase key only when the state has LoRA factors."""
        config = self.client_config(server_round)
        if a_keys(global_state):
            config[PHASE] = rolora_phase(server_round)
        return Payload({GLOBAL: dict(global_state)}, config)

    def expected(self, server_round, client, global_state):
        """The trained factor (and non-LoRA keys), not the frozen one."""
        frozen = set(frozen_factor(global_state, rolora_phase(server_round)))
        return {STATE: {k: tuple(v.shape) for k, v in global_state.items() if k not in frozen}}

    def client_plan(self, payload, shapes, received):
        frozen = set(frozen_factor(shapes, payload.config[PHASE])) if PHASE in payload.config else set()
        return StatePlan(shared=tuple(k for k in shapes if k in received and k not in frozen),
                         local=tuple(k for k in shapes if k not in received and k not in frozen),
                         frozen=tuple(k for k in shapes if k in frozen))

    # aggregate: the base class's FedAvg of the replies (the trained factor), the frozen one kept
