"""``ffa_lora``: FFA-LoRA (Sun, Li, Li, Ding, ICLR 2024, "Improving LoRA in privacy-preserving
federated learning", arXiv 2403.12313): LoRA's A stays frozen at its random initialisation on
every client; only B is trained, uploaded and averaged. All clients build A from the same seed (the
tuning method's initial state, `fedmllm.federated.tuned.TunedModels`; the server's initial global
state comes from the same seed), so A is common and the aggregation is exact:

    B <- B_bar = sum_k p_k B_k,    s B_bar A = sum_k p_k s B_k A      (p_k = n_k / sum_j n_j).

Messages: the payload carries B (and any non-LoRA key of the method's state), never A (every
client already holds it: the method's initial A); the reply carries the trained B only, half the
adapter's upload. The server keeps A of the global state unchanged. Keys outside LoRA layers are
averaged as in FedAvg. Equal ranks only.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from fedmllm.federated.algorithms.base import Algorithm, StatePlan, register_algorithm
from fedmllm.federated.lora import a_key, b_key, layers


def a_keys(keys: Iterable[str]) -> list[str]:
    """The LoRA A keys among ``keys`` (one per layer whose B twin is present)."""
    return [a_key(p) for p in layers(list(keys))]


def b_keys(keys: Iterable[str]) -> list[str]:
    """The LoRA B keys among ``keys`` (one per layer whose A twin is present)."""
    return [b_key(p) for p in layers(list(keys))]


def frozen_a_plan(shapes: Mapping[str, tuple[int, ...]], received: Mapping[str, np.ndarray]) -> StatePlan:
    """A frozen (whether received or not), the other received keys shared, the rest local."""
    frozen = set(a_keys(shapes))
    return StatePlan(shared=tuple(k for k in shapes if k in received and k not in frozen),
                     local=tuple(k for k in shapes if k not in received and k not in frozen),
                     frozen=tuple(k for k in shapes if k in frozen))


@register_algorithm
class FFALoRA(Algorithm):
    """A frozen at its common seeded init everywhere; B trained, uploaded, averaged (exact)."""

    name = "ffa_lora"
    description = "FFA-LoRA, Sun et al. ICLR 2024 (A frozen at its seeded init; B <- sum_k p_k B_k, exact)"
    secure_aggregatable = True

    def plan(self, client, shapes):
        """Server view: A frozen (never sent, never uploaded), everything else shared."""
        frozen = set(a_keys(shapes))
        return StatePlan(shared=tuple(k for k in shapes if k not in frozen),
                         frozen=tuple(k for k in shapes if k in frozen))

    def client_plan(self, payload, shapes, received):
        return frozen_a_plan(shapes, received)

    def aggregate(self, server_round, global_state, replies):
        """B <- sum_k p_k B_k (`fedmllm.federated.aggregate.weighted_average` of the replies, which
        hold no A); A of the global state kept."""
        return super().aggregate(server_round, global_state, replies)
