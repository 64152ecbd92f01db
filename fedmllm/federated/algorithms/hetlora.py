"""``hetlora``: HetLoRA (Cho, Liu, Xu, Fahrezi, Joshi, EMNLP 2024, "Heterogeneous LoRA for
federated fine-tuning of on-device foundation models", arXiv 2401.06432).

Zero-padding, sparsity-weighted aggregation and truncation (Sec. 3, Fig. 2): client k trains a
LoRA of its own rank r_k, received as the global adapter truncated to r_k (Fig. 2c); the server
zero-pads every reply to the global rank r_g (Fig. 2a) and aggregates the padded factors with
weights from the Frobenius norm of each client's reconstructed update (Fig. 2b):

    S_k = B_k A_k,    w_k = ||S_k||_F / Z,    Z = sum_j ||S_j||_F
    B = sum_k w_k pad(B_k),    A = sum_k w_k pad(A_k)

The paper's weights replace FedAvg's p_k = n_k / n (they are not multiplied by the data sizes):
``weighting = "norm"`` (default). ``"norm_examples"`` multiplies them by n_k (w_k ~ n_k ||S_k||_F),
``"examples"`` drops the norms (plain zero-padding FedAvg, the paper's "HomLoRA / zero-padding"
reference). The weights are computed per LoRA layer (one module = one S_k; the scaling s is the
same for all clients, so it cancels), with ||B A||_F^2 = sum((B^T B) * (A A^T)) (no d_out x d_in
product); a layer where every S_k is 0 falls back to p_k. Non-LoRA keys are averaged as in FedAvg.

Rank self-pruning (Sec. 3, "local training with rank self-pruning"; ``self_prune = true``):
client k adds to its local loss the regularizer on its last ranks

    lambda * sum_layers ||B_k[:, g:r_k]||_F ||A_k[g:r_k, :]||_F,    g = floor(gamma r_k)

(``prune_lambda``, decay factor gamma = ``prune_decay``), and prunes its rank to g when that term
is smaller after local training than before it (the tail carried little of the update and
shrank); the pruned rank stays for the following rounds (never below ``prune_min_rank``). In this
core a client's reply shapes are fixed before it trains (`expected`), so the decision, a pure
function of what the client received and what it trained, is evaluated by the server on the
validated reply (`prune_rank`): the same outcome as the client deciding, the pruned tail is
dropped before padding, and from the next round the client is sent rank g (payload config
``lora-rank``: the client runtime builds the rank-g model) and replies at rank g. The pruned
ranks are server state (`state_dict`, resumable). The pruning round's reply still carries the
tail (bytes of one round at the old rank). The regularizer form (product of the tail norms) and
the before/after test follow the paper's description; defaults of gamma and lambda are ours.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from fedmllm.federated import lora
from fedmllm.federated import protocol as P
from fedmllm.federated.aggregate import normalize_weights
from fedmllm.federated.algorithms.base import GLOBAL, STATE, register_algorithm
from fedmllm.federated.algorithms.flora import LoraAlgorithm, lora_layers
from fedmllm.training.hooks import TrainHook, state_parameters

WEIGHTINGS = ("norm", "norm_examples", "examples")
PRUNE_DECAY = "hetlora-prune-decay"  # config keys (server -> client) of the self-pruning regularizer
PRUNE_LAMBDA = "hetlora-prune-lambda"


# ---------------------------------------------------------------------------------------------
# the update rule, pure functions over numpy factors

def update_norm(b: np.ndarray, a: np.ndarray) -> float:
    """||B A||_F from sum((B^T B) * (A A^T)) (float64; no d_out x d_in product)."""
    b, a = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
    return float(np.sqrt(max(float(np.sum((b.T @ b) * (a @ a.T))), 0.0)))


def hetlora_weights(bs: Sequence[np.ndarray], as_: Sequence[np.ndarray], counts: Sequence[float],
                    weighting: str = "norm") -> np.ndarray:
    """Normalized aggregation weights of one layer: ||B_k A_k||_F / Z ("norm", the paper's),
    ~ n_k ||B_k A_k||_F ("norm_examples") or n_k / n ("examples"); all-zero norms: n_k / n."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    p = normalize_weights(counts, len(bs))
    if weighting == "examples":
        return p
    norms = np.array([update_norm(b, a) for b, a in zip(bs, as_)])
    w = norms * (p if weighting == "norm_examples" else 1.0)
    return w / w.sum() if w.sum() > 0 else p


def zero_pad_factors(b: np.ndarray, a: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, A) padded with zero columns / rows to ``rank`` (float64)."""
    b, a = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
    extra = rank - a.shape[0]
    if extra < 0:
        raise ValueError(f"cannot zero-pad a rank-{a.shape[0]} adapter to rank {rank}")
    return np.pad(b, ((0, 0), (0, extra))), np.pad(a, ((0, extra), (0, 0)))


def hetlora_aggregate(bs: Sequence[np.ndarray], as_: Sequence[np.ndarray], weights: Sequence[float],
                      rank: int) -> tuple[np.ndarray, np.ndarray]:
    """B = sum_k w_k pad(B_k), A = sum_k w_k pad(A_k) at ``rank`` (``weights`` normalized here)."""
    w = normalize_weights(weights, len(bs))
    padded = [zero_pad_factors(b, a, rank) for b, a in zip(bs, as_)]
    return sum(wk * pb for wk, (pb, _) in zip(w, padded)), sum(wk * pa for wk, (_, pa) in zip(w, padded))


def tail_start(rank: int, decay: float) -> int:
    """g = floor(gamma r): the first of the last ranks the regularizer and the pruning act on."""
    return int(math.floor(rank * decay + 1e-9))


def tail_score(state, prefixes: Sequence[str], decay: float) -> float:
    """sum_layers ||B[:, g:r]||_F ||A[g:r, :]||_F of a LoRA state (the regularizer without lambda)."""
    total = 0.0
    for p in prefixes:
        a, b = np.asarray(state[lora.a_key(p)], dtype=np.float64), np.asarray(state[lora.b_key(p)], dtype=np.float64)
        g = tail_start(a.shape[0], decay)
        total += float(np.linalg.norm(b[:, g:]) * np.linalg.norm(a[g:]))
    return total


def prune_rank(received, trained, prefixes: Sequence[str], decay: float, min_rank: int = 1) -> Optional[int]:
    """The pruned rank g = floor(gamma r) when the tail score is smaller after local training
    (``trained``) than before it (``received``) and g >= ``min_rank``; None: keep the rank."""
    if not prefixes:
        return None
    rank = int(np.shape(trained[lora.a_key(prefixes[0])])[0])
    g = tail_start(rank, decay)
    if g < max(1, int(min_rank)) or g >= rank:
        return None
    return g if tail_score(trained, prefixes, decay) < tail_score(received, prefixes, decay) else None


# ---------------------------------------------------------------------------------------------
# the client's regularizer

class TailPenalty(TrainHook):
    """HetLoRA's self-pruning regularizer: lambda sum_layers ||B[:, g:r]||_F ||A[g:r]||_F."""

    def __init__(self, decay: float, lam: float, prefixes: Sequence[str], method=None):
        self.decay, self.lam, self.prefixes, self.method = float(decay), float(lam), list(prefixes), method
        self._pairs: list = []

    def on_start(self, model, params) -> None:
        live = state_parameters(model, self.method, params)
        self._pairs = []
        for p in self.prefixes:
            b, a = live[lora.b_key(p)], live[lora.a_key(p)]
            self._pairs.append((b, a, tail_start(a.shape[0], self.decay)))

    def loss_term(self, model, params):
        if not self._pairs or self.lam == 0.0:
            return None
        return self.lam * sum(b[:, g:].float().norm() * a[g:].float().norm() for b, a, g in self._pairs)


# ---------------------------------------------------------------------------------------------

@register_algorithm
class HetLoRA(LoraAlgorithm):
    """Truncate to r_k; zero-pad replies to r_g; weights ||B_k A_k||_F / Z; optional self-pruning."""

    name = "hetlora"
    description = ("HetLoRA, Cho et al. EMNLP 2024 (truncate to r_k, zero-pad to r_g, weights "
                   "||B_k A_k||_F / sum_j ||B_j A_j||_F; optional rank self-pruning)")
    defaults = {"weighting": "norm", "self_prune": False, "prune_decay": 0.9, "prune_lambda": 0.001,
                "prune_min_rank": 1}
    heterogeneous_ranks = True

    def validate(self):
        o = self.options
        if o["weighting"] not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {o['weighting']!r}")
        if not 0.0 < o["prune_decay"] < 1.0:
            raise ValueError(f"prune_decay must be in (0, 1), got {o['prune_decay']}")
        if o["prune_lambda"] < 0:
            raise ValueError(f"prune_lambda must be >= 0, got {o['prune_lambda']}")
        if o["prune_min_rank"] < 1:
            raise ValueError(f"prune_min_rank must be >= 1, got {o['prune_min_rank']}")

    def reset(self):
        self.pruned: dict[int, int] = {}  # client -> its self-pruned rank

    # -- server half ------------------------------------------------------------------------
    def rank_of_client(self, client):
        return self.pruned.get(int(client), self.client_rank(client))

    def client_config(self, server_round):
        o = self.options
        if not o["self_prune"]:
            return {}
        return {PRUNE_DECAY: float(o["prune_decay"]), PRUNE_LAMBDA: float(o["prune_lambda"])}

    def configure(self, server_round, client, global_state):
        payload = super().configure(server_round, client, global_state)
        if int(client) in self.pruned:  # the client runtime builds the model of the pruned rank
            payload.config[P.LORA_RANK] = self.pruned[int(client)]
        return payload

    def aggregate(self, server_round, global_state, replies):
        if self.options["self_prune"]:
            replies = [self._apply_pruning(global_state, r) for r in replies]
        return super().aggregate(server_round, global_state, replies)

    def _apply_pruning(self, global_state, reply):
        """Client k's self-pruning decision on its reply: drop the tail, remember the rank."""
        prefixes = lora_layers(global_state)
        received = self.client_state(reply.partition_id, global_state)
        rank = prune_rank(received, reply.arrays[STATE], prefixes, self.options["prune_decay"],
                          self.options["prune_min_rank"])
        if rank is None:
            return reply
        self.pruned[int(reply.partition_id)] = rank
        arrays = {**reply.arrays, STATE: lora.truncate(reply.arrays[STATE], rank)}
        return type(reply)(reply.partition_id, reply.num_examples, arrays, reply.metrics)

    def aggregate_lora(self, server_round, global_state, states, weights, prefixes):
        out = {}
        for p in prefixes:
            ak, bk = lora.a_key(p), lora.b_key(p)
            bs, as_ = [st[bk] for st in states], [st[ak] for st in states]
            w = hetlora_weights(bs, as_, weights, self.options["weighting"])
            out[bk], out[ak] = hetlora_aggregate(bs, as_, w, np.shape(global_state[ak])[0])
        return out

    def state_dict(self):
        return {"arrays": {}, "values": {"pruned_ranks": {str(k): int(v) for k, v in sorted(self.pruned.items())}}}

    def load_state_dict(self, state):
        self.pruned = {int(k): int(v) for k, v in state.get("values", {}).get("pruned_ranks", {}).items()}

    # -- client half ------------------------------------------------------------------------
    def hooks(self, payload, local_state, method, state):
        lam = float(payload.config.get(PRUNE_LAMBDA, 0.0))
        if lam == 0.0:
            return []
        prefixes = lora.layers(list(payload.arrays[GLOBAL]))
        return [TailPenalty(float(payload.config[PRUNE_DECAY]), lam, prefixes, method)] if prefixes else []
