"""Heterogeneous clients: per-client LoRA ranks and local-step budgets, resolved and validated.

``federated.client_ranks`` (one rank per client) or ``federated.rank_profile`` (a named mix) give
client k its LoRA rank r_k <= the global adapter's rank r_g = ``methods.lora.r``; only strategies
whose algorithm allows heterogeneous ranks accept a mix. ``federated.client_local_steps`` gives
each client its own number of local steps per round (compute budgets). Everything is checked
before any compute, with one-line errors that name the valid choices.
"""

from __future__ import annotations

from typing import Optional

from fedmllm.config import Config
from fedmllm.errors import UserError

RANK_PROFILES: dict[str, tuple[int, ...]] = {
    # a fixed share of small and large adapters, as edge fleets are: r cycles over clients
    "edge-mix": (2, 4, 8, 16),
}


def client_ranks(cfg: Config, strategy: Optional[str] = None) -> Optional[list[int]]:
    """Client k's LoRA rank for every k, or None when every client has the global rank.

    ``strategy``: with ``federated.rank_scope = "where-allowed"``, a strategy that needs equal
    ranks gets None (every client at the global rank)."""
    from fedmllm.federated.algorithms import ALGORITHMS
    from fedmllm.federated.tuned import rank_scaling

    fed = cfg.federated
    if strategy is not None and fed.rank_scope == "where-allowed" and \
            not ALGORITHMS.get(strategy).heterogeneous_ranks:
        return None
    global_rank, _ = rank_scaling(cfg)
    if fed.rank_profile:
        cycle = RANK_PROFILES[fed.rank_profile]
        ranks = [cycle[k % len(cycle)] for k in range(fed.num_clients)]
    elif fed.client_ranks:
        ranks = [int(r) for r in fed.client_ranks]
    else:
        return None
    return None if all(r == global_rank for r in ranks) else ranks


def client_steps(cfg: Config) -> Optional[list[int]]:
    """Client k's local steps per round for every k, or None when all take ``local_steps``."""
    steps = cfg.federated.client_local_steps
    return [int(s) for s in steps] if steps else None


def check_heterogeneity(cfg: Config, initial_state=None) -> None:
    """Every per-client setting is valid for the method, the model and each strategy.

    ``initial_state``: the method's state on the model (to check ranks against layer sizes)."""
    from fedmllm.federated.algorithms import ALGORITHMS
    from fedmllm.federated.tuned import rank_scaling

    fed = cfg.federated
    n = fed.num_clients
    if fed.rank_profile and fed.rank_profile not in RANK_PROFILES:
        raise UserError(f"unknown federated.rank_profile {fed.rank_profile!r}; valid: {', '.join(RANK_PROFILES)}")
    if fed.rank_profile and fed.client_ranks:
        raise UserError("set federated.client_ranks or federated.rank_profile, not both")
    for key, values in (("client_ranks", fed.client_ranks), ("client_local_steps", fed.client_local_steps)):
        if values and len(values) != n:
            raise UserError(f"federated.{key} has {len(values)} entries for {n} clients (federated.num_clients)")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise UserError(f"federated.{key} must hold positive integers, got {bad[:3]}")
    if not (fed.client_ranks or fed.rank_profile):
        return
    global_rank, _ = rank_scaling(cfg)
    if global_rank is None:
        raise UserError(f"federated.client_ranks needs a LoRA-family method (federated.method), "
                        f"got {fed.method!r}")
    ranks = client_ranks(cfg) or [global_rank] * n
    too_big = sorted({r for r in ranks if r > global_rank})
    if too_big:
        raise UserError(f"client ranks {too_big} exceed the global adapter's rank methods.{fed.method}.r = "
                        f"{global_rank}; raise it or lower the client ranks")
    if initial_state is not None:
        from fedmllm.federated import lora

        prefixes = lora.layers(list(initial_state))
        if prefixes:
            limit = min(min(initial_state[lora.a_key(p)].shape[1], initial_state[lora.b_key(p)].shape[0])
                        for p in prefixes)
            if global_rank > limit:
                raise UserError(f"LoRA rank {global_rank} exceeds the smallest adapted layer size {limit}")
    if client_ranks(cfg) is None:
        return
    allowed = [name for name in ALGORITHMS.names() if ALGORITHMS.get(name).heterogeneous_ranks]
    refuse = [s for s in fed.strategies if not ALGORITHMS.get(s).heterogeneous_ranks]
    if refuse and fed.rank_scope == "all":
        raise UserError(f"strategy {refuse[0]!r} needs equal LoRA ranks, but federated.client_ranks mixes "
                        f"{sorted(set(ranks))}; strategies that allow mixed ranks: {', '.join(allowed) or '(none)'} "
                        "(or set federated.rank_scope = \"where-allowed\")")


def client_columns(cfg: Config) -> dict[str, list]:
    """Per-client columns for the partition table: LoRA rank and local steps where they vary."""
    out: dict[str, list] = {}
    ranks, steps = client_ranks(cfg), client_steps(cfg)
    if ranks:
        out["lora rank" if cfg.federated.rank_scope == "all" else "lora rank (mixed-rank rules)"] = ranks
    if steps:
        out["local steps"] = steps
    return out
