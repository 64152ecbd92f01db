"""``flora``: FLoRA (Wang, Shen, He, Sun, Xu, Yan, Su, Zhang, NeurIPS 2024, "FLoRA: federated
fine-tuning large language models with heterogeneous low-rank adaptations", arXiv 2409.05976).

Stacking aggregation (Sec. 3.2, Fig. 2; the paper's stacking equation): per LoRA layer, with
p_k = n_k / sum_j n_j,

    B = [B_1, B_2, ..., B_K]              (d_out x sum_k r_k)
    A = [p_1 A_1; p_2 A_2; ...; p_K A_K]  (sum_k r_k x d_in)
    =>  B A = sum_k p_k B_k A_k           (exactly: no cross terms B_i A_j)

(the paper scales the A blocks by p_k; stacking at any rank r_k is why ranks may differ). In
the paper every client adds the stacked update s B A to its local copy of the base weights each
round and re-initializes its LoRA modules for the next round (here the server draws the fresh A,
one per layer, so a run is reproducible and a client of rank r_k takes its first r_k rows). The
merged updates accumulate in the layer's residual R (``<layer>lora_residual`` in the global
state; the runtimes set W = W0 + R, `fedmllm.federated.tuned`):

    R_{t+1} = R_t + s B A,    B_{t+1} = 0,    A_{t+1} = fresh init (seeded by round and layer)

so the effective global update R + s B A after aggregation equals R_t + sum_k p_k s B_k A_k
(exact; tests/test_lora_rules_b.py measures it with `lora.aggregation_error`). The fresh A is
peft's LoRA init in numpy: kaiming-uniform(a = sqrt(5)) on a (r, d_in) weight, i.e. uniform in
+-1/sqrt(d_in), from ``np.random.default_rng([init_seed, round, crc32(layer)])`` (resumable).
Client k receives A truncated to its rank r_k (fresh rows) and B = 0 (heterogeneous ranks).

Communication: the payload carries the residual R (d_out x d_in per layer: what our transport
measures). A deployment of the paper instead broadcasts the stacked factors, sum_k r_k (d_in +
d_out) numbers per layer, and each client merges them itself; `FLoRA.round_info` reports that
size for the last aggregation (``stacked_downlink_bytes``: bytes one receiving client downloads).
Non-LoRA keys of the method's state (none for plain LoRA) are averaged as in FedAvg.

This module also holds `LoraAlgorithm`, the server-half skeleton of the LoRA rules of this
package (flora, fedex_lora, flexlora, hetlora): rank truncation of the payload for heterogeneous
clients, the reply shapes (residuals never go up), FedAvg for non-LoRA keys, the LoRA scaling.
"""

from __future__ import annotations

import zlib
from typing import ClassVar, Optional, Sequence

import numpy as np

from fedmllm.federated import lora
from fedmllm.federated.aggregate import normalize_weights, weighted_average
from fedmllm.federated.algorithms.base import (
    GLOBAL, STATE, Algorithm, Arrays, Payload, Reply, register_algorithm)


# ---------------------------------------------------------------------------------------------
# the update rule, pure functions over numpy factors

def flora_stack(bs: Sequence[np.ndarray], as_: Sequence[np.ndarray], weights: Sequence[float]
                ) -> tuple[np.ndarray, np.ndarray]:
    """FLoRA's stacked factors (float64): B = [B_1 ... B_K], A = [p_1 A_1; ...; p_K A_K], so that
    B A = sum_k p_k B_k A_k for any ranks r_k (p = ``weights`` normalized)."""
    p = normalize_weights(weights, len(bs))
    b = np.concatenate([np.asarray(x, dtype=np.float64) for x in bs], axis=1)
    a = np.concatenate([pk * np.asarray(x, dtype=np.float64) for pk, x in zip(p, as_)], axis=0)
    return b, a


def flora_residual(residual: Optional[np.ndarray], bs: Sequence[np.ndarray], as_: Sequence[np.ndarray],
                   weights: Sequence[float], scaling: float) -> np.ndarray:
    """R + s B A with FLoRA's stacked (B, A): the update merged into the base weight (float64)."""
    b, a = flora_stack(bs, as_, weights)
    merged = scaling * (b @ a)
    return merged if residual is None else np.asarray(residual, dtype=np.float64) + merged


def lora_init_a(rank: int, d_in: int, rng: np.random.Generator) -> np.ndarray:
    """peft's LoRA A init in numpy: kaiming_uniform_(a=sqrt(5)) of a (rank, d_in) weight, whose
    bound is gain * sqrt(3 / fan_in) = sqrt(1/3) * sqrt(3 / d_in) = 1 / sqrt(d_in)."""
    bound = 1.0 / np.sqrt(d_in)
    return rng.uniform(-bound, bound, size=(rank, d_in))


def stacked_downlink_bytes(replies: Sequence[Arrays], layer_prefixes: Sequence[str]) -> int:
    """Bytes of FLoRA's broadcast to one client: every layer's stacked factors, sum_k r_k (d_in +
    d_out) numbers, plus the clients' non-LoRA keys (sent as they are), at the replies' dtypes."""
    factor_keys = {k for p in layer_prefixes for k in (lora.a_key(p), lora.b_key(p))}
    total = 0
    for state in replies:
        total += sum(np.asarray(state[k]).nbytes for k in factor_keys if k in state)
    if replies:
        total += sum(np.asarray(v).nbytes for k, v in replies[0].items() if k not in factor_keys)
    return int(total)


# ---------------------------------------------------------------------------------------------
# the server-half skeleton of the LoRA rules

def lora_layers(state: Arrays) -> list[str]:
    """The LoRA layer prefixes of a global state (residual keys ignored)."""
    return lora.layers([k for k in state if not lora.is_residual(k)])


class LoraAlgorithm(Algorithm):
    """Shared server half of the LoRA aggregation rules.

    - `init` adds a zero residual per layer when ``uses_residuals`` (FLoRA, FedEx-LoRA; these
      need the LoRA scaling s, `set_lora_scaling`, and refuse to start without it).
    - `configure` sends the whole global state (residuals included: the client runtime merges
      them into its base weights and strips them before the client half sees the payload), the
      LoRA factors truncated to the client's rank r_k (`lora.truncate`, HetLoRA / FlexLoRA's
      "truncate for the next client").
    - `expected`: the trained state at the client's rank, never a residual.
    - `aggregate`: non-LoRA keys by FedAvg (n_k weights), the LoRA layers by `aggregate_lora`.
    The client half is the base class's (received keys shared, trained and uploaded).
    """

    uses_residuals: ClassVar[bool] = False

    def scaling(self) -> float:
        """The LoRA scaling s (one for all ranks); the round loop sets it (`set_lora_scaling`)."""
        if self.lora_scaling is None:
            raise ValueError(f"strategy {self.name!r} needs the LoRA scaling s = alpha / r of the global "
                             "adapter: Algorithm.set_lora_scaling (LoopSettings.lora_scaling)")
        return self.lora_scaling

    def rank_of_client(self, client: int) -> Optional[int]:
        """The LoRA rank the client trains (None: the global one)."""
        return self.client_rank(client)

    def init(self, global_state):
        if not self.uses_residuals:
            return None
        prefixes = lora_layers(global_state)
        if not prefixes:
            return None
        self.scaling()  # residuals are in weight units (s B A): fail before any client trains
        out = dict(global_state)
        for p in prefixes:
            key = lora.residual_key(p)
            if key not in out:
                b, a = np.asarray(global_state[lora.b_key(p)]), np.asarray(global_state[lora.a_key(p)])
                out[key] = np.zeros((b.shape[0], a.shape[1]), dtype=b.dtype)
        return out

    def client_state(self, client: int, global_state: Arrays) -> Arrays:
        """What client ``client`` receives: every key, LoRA factors truncated to its rank."""
        rank = self.rank_of_client(client)
        return dict(global_state) if rank is None else lora.truncate(global_state, rank)

    def configure(self, server_round, client, global_state):
        return Payload({GLOBAL: self.client_state(client, global_state)}, self.client_config(server_round))

    def expected(self, server_round, client, global_state):
        sent = self.client_state(client, global_state)
        return {STATE: {k: tuple(np.shape(v)) for k, v in sent.items() if not lora.is_residual(k)}}

    def aggregate(self, server_round, global_state, replies: Sequence[Reply]):
        states = [r.arrays[STATE] for r in replies]
        weights = [float(r.num_examples) for r in replies]
        prefixes = lora_layers(global_state)
        lora_keys = {k for p in prefixes for k in (lora.a_key(p), lora.b_key(p), lora.residual_key(p))}
        out = dict(global_state)
        other = [k for k in states[0] if k not in lora_keys]
        if other:
            out.update(weighted_average([{k: s[k] for k in other} for s in states], weights))
        if prefixes:
            for key, value in self.aggregate_lora(server_round, global_state, states, weights, prefixes).items():
                like = global_state.get(key, global_state[lora.b_key(prefixes[0])])  # a new residual: B's
                out[key] = np.asarray(value).astype(np.asarray(like).dtype)
        return out

    def aggregate_lora(self, server_round: int, global_state: Arrays, states: Sequence[Arrays],
                       weights: Sequence[float], prefixes: Sequence[str]) -> Arrays:
        """The new LoRA keys (factors, residuals) of every layer in ``prefixes``."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------

@register_algorithm
class FLoRA(LoraAlgorithm):
    """Stacking: R += s [B_1..B_K][p_1 A_1; ..; p_K A_K]; then B = 0, A fresh (any ranks)."""

    name = "flora"
    description = ("FLoRA, Wang et al. NeurIPS 2024 (stacking: B A = sum_k p_k B_k A_k merged into "
                   "the base weight each round; LoRA re-initialized)")
    defaults = {"init_seed": 0}
    heterogeneous_ranks = True
    uses_residuals = True

    def reset(self):
        self._info: dict = {}

    def aggregate_lora(self, server_round, global_state, states, weights, prefixes):
        s = self.scaling()
        out = {}
        for p in prefixes:
            ak, bk, rk = lora.a_key(p), lora.b_key(p), lora.residual_key(p)
            out[rk] = flora_residual(global_state.get(rk), [st[bk] for st in states],
                                     [st[ak] for st in states], weights, s)
            rank, d_in = np.shape(global_state[ak])
            rng = np.random.default_rng([int(self.options["init_seed"]), int(server_round),
                                         zlib.crc32(p.encode())])
            out[ak] = lora_init_a(rank, d_in, rng)
            out[bk] = np.zeros(np.shape(global_state[bk]))
        self._info = {"stacked_downlink_bytes": stacked_downlink_bytes(states, prefixes),
                      "stacked_rank": int(sum(np.shape(st[lora.a_key(prefixes[0])])[0] for st in states))}
        return out

    def round_info(self) -> dict:
        """Of the last aggregation: ``stacked_downlink_bytes``, what one client would download in a
        deployment of the paper (the stacked factors, sum_k r_k (d_in + d_out) per layer, plus the
        non-LoRA keys), and ``stacked_rank`` = sum_k r_k; {} before the first (or without LoRA)."""
        return dict(self._info)
