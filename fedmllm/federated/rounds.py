"""The federated round loop, ours rather than Flower's ``Strategy.start``, so it can resume.

Each round: sample clients (seeded by the round: `sampled_partitions`), let the algorithm
configure one payload per client, exchange them through a `Transport` (Flower's Grid in
``server/``, or in-process), validate every reply against what the algorithm expects from that
client (`protocol.validate_reply`: bad replies count as failed clients, they never reach the
aggregate), measure (an optional observer), aggregate, evaluate, and write an atomic checkpoint.
A run killed anywhere resumes from the last complete round to the identical result: client seeds
derive from (seed, round, partition), the sample from (seed, round), and the checkpoint holds the
global state, the algorithm's server state, RNG states and running totals.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

from fedmllm.errors import UserError
from fedmllm.faults import crash_point
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import Algorithm, Payload, Reply
from fedmllm.federated.algorithms.base import Arrays, Groups
from fedmllm.federated.checkpoint import CheckpointStore, RoundCheckpoint, set_rng_states


class RoundFailed(UserError):
    """Too many clients failed in one round."""


@dataclass
class RawReply:
    """A client's answer as it came off the wire, not yet validated."""

    arrays: Groups
    metrics: dict[str, Any]


class Transport(Protocol):
    """Delivers one round's payloads to clients and collects their answers."""

    def exchange(self, server_round: int, payloads: dict[int, Payload]
                 ) -> tuple[dict[int, RawReply], dict[int, str]]:
        """Send ``payloads`` (partition id -> payload); return (replies, failures), both keyed by
        partition id (a failure is the reason, e.g. the client's exception)."""
        ...


class SecureTransport(Transport, Protocol):
    """A transport under secure aggregation (``secure = True``): the server learns only the
    example-weighted mean of the clients' shared states, never one client's."""

    secure: bool

    def secure_exchange(self, server_round: int, payloads: dict[int, Payload],
                        expected: dict[int, Any]) -> tuple[Optional[Reply], dict[int, str]]:
        """Run one round's secure aggregation; return (the aggregate as one `Reply` with
        ``partition_id = -1``, ``num_examples`` = the clients' total, ``arrays = {STATE: mean}``
        and metrics holding ``num-clients``; or None when nothing could be aggregated, failures
        by partition). ``expected`` is what `Algorithm.expected` says each client sends back."""
        ...


def sampling_seed(seed: int, server_round: int) -> int:
    """The seed of the ``random.Random`` that samples a round's clients."""
    return seed * 1_000_003 + server_round


def sampled_partitions(seed: int, num_clients: int, per_round: int, server_round: int) -> list[int]:
    """The partitions that train in ``server_round``, sorted: all when ``per_round`` is 0 or
    covers every client, else ``random.Random(sampling_seed).sample`` of them (the rule the
    Flower-based loop used, so sampled runs keep their clients)."""
    if not per_round or per_round >= num_clients:
        return list(range(num_clients))
    rng = random.Random(sampling_seed(seed, server_round))
    return sorted(rng.sample(range(num_clients), per_round))


# observer(server_round, global_before, replies) -> extra fields of the round event (e.g. drift)
Observer = Callable[[int, Arrays, Sequence[Reply]], dict]
# after_aggregate(server_round, global_before, replies, global_after) -> extra fields of the round event
AfterAggregate = Callable[[int, Arrays, Sequence[Reply], Arrays], dict]
# evaluate(server_round, global_state) -> None (logs and saves what the schedule says)
Evaluate = Callable[[int, Arrays], None]


@dataclass
class LoopSettings:
    """What one system's round loop needs besides the algorithm and the transport."""

    system: str
    rounds: int
    num_clients: int
    clients_per_round: int
    seed: int
    local_steps: int
    base_lr: float
    lr_decay: float = 1.0
    max_failure_fraction: float = 0.5
    common_config: dict[str, Any] = field(default_factory=dict)  # experiment id, dirs
    client_ranks: Optional[list[int]] = None  # per-client LoRA ranks (None: the global rank)
    lora_scaling: Optional[float] = None  # s = alpha / r_g of a LoRA method (None: not LoRA)
    client_steps: Optional[list[int]] = None  # per-client local steps (None: local_steps)
    client_extras: dict[int, dict[str, Any]] = field(default_factory=dict)  # attack / straggler keys
    client_sizes: Optional[list[int]] = None  # each partition's training examples (reply check)
    max_update_norm: float = 0.0  # reject replies whose update norm exceeds this (0: off)

    def client_config(self, client: int) -> dict[str, Any]:
        """Per-client round values: local steps (budgets), the LoRA rank if heterogeneous, and
        what the system asks of this client (an attack it plays, a straggler's slowdown)."""
        out: dict[str, Any] = {P.LOCAL_STEPS: self.client_steps[client] if self.client_steps else self.local_steps}
        if self.client_ranks:
            out[P.LORA_RANK] = self.client_ranks[client]
        out.update(self.client_extras.get(client, {}))
        return out

    def lr(self, server_round: int) -> float:
        """The clients' learning rate in ``server_round``: lr x decay^(round - 1)."""
        return self.base_lr * self.lr_decay ** (server_round - 1)


class RoundLoop:
    """Runs (or resumes) one system: ``run(initial_state)`` returns the final global state."""

    def __init__(self, algorithm: Algorithm, transport: Transport, settings: LoopSettings, *,
                 log: Callable[[dict], None], metrics_size: Callable[[], int],
                 checkpoints: Optional[CheckpointStore] = None, observer: Optional[Observer] = None,
                 evaluate: Optional[Evaluate] = None, after_aggregate: Optional[AfterAggregate] = None):
        self.algo, self.transport, self.s = algorithm, transport, settings
        self.log, self.metrics_size = log, metrics_size
        self.checkpoints, self.observer, self.evaluate = checkpoints, observer, evaluate
        self.after_aggregate = after_aggregate
        algorithm.set_client_ranks(settings.client_ranks)
        algorithm.set_lora_scaling(settings.lora_scaling)
        self.totals: dict[str, float] = {"bytes_up": 0, "bytes_down": 0, "seconds": 0.0, "rounds": 0}

    def resume_point(self) -> Optional[RoundCheckpoint]:
        """The last complete round's checkpoint of this system, if any."""
        return self.checkpoints.latest(self.s.system) if self.checkpoints else None

    def run(self, initial_state: Arrays) -> Arrays:
        state = dict(initial_state)
        state = self.algo.init(state) or state
        first = 1
        ckpt = self.resume_point()
        if ckpt is not None:
            state, first = ckpt.global_state, ckpt.round + 1
            self.algo.load_state_dict(ckpt.algorithm)
            self.totals.update(ckpt.totals)
            if ckpt.rng:
                set_rng_states(ckpt.rng)
        for server_round in range(first, self.s.rounds + 1):
            state = self.round(server_round, state)
        return state

    def round(self, server_round: int, state: Arrays) -> Arrays:
        """One round from ``state``; returns the new global state (checkpointed)."""
        s, t0 = self.s, time.perf_counter()
        clients = sampled_partitions(s.seed, s.num_clients, s.clients_per_round, server_round)
        config = {**s.common_config, P.SERVER_ROUND: server_round, P.LR: s.lr(server_round),
                  P.ALGORITHM: self.algo.name, P.SYSTEM: s.system}
        payloads = round_payloads(self.algo, server_round, state, clients, config, s.client_config)
        secure = getattr(self.transport, "secure", False)
        if secure:  # the server sees only the aggregate (one `Reply`, metrics hold num-clients)
            expected = {pid: self.algo.expected(server_round, pid, state) for pid in clients}
            aggregate, failures = self.transport.secure_exchange(server_round, payloads, expected)
            crash_point(s.system, server_round, "train")
            replies = [aggregate] if aggregate is not None else []
        else:
            raw, failures = self.transport.exchange(server_round, payloads)
            crash_point(s.system, server_round, "train")
            replies = validated_replies(self.algo, server_round, state, clients, raw, failures,
                                        sizes=s.client_sizes, max_update_norm=s.max_update_norm)
        for pid, reason in sorted(failures.items()):
            self.log({"event": "client_failed", "system": s.system, "round": server_round,
                      "client": pid, "error": reason})
        if len(failures) / len(clients) > s.max_failure_fraction:
            raise RoundFailed(f"round {server_round}: {len(failures)} of {len(clients)} clients failed "
                              f"(more than federated.max_failure_fraction = {s.max_failure_fraction})")
        if len(replies) < self.algo.min_replies():
            raise RoundFailed(f"round {server_round}: {len(replies)} valid replies, strategy {self.algo.name!r} "
                              f"needs at least {self.algo.min_replies()}")
        extra = self.observer(server_round, state, replies) if self.observer else {}
        new_state = self.algo.aggregate(server_round, state, replies)
        crash_point(s.system, server_round, "aggregate")
        if self.after_aggregate:
            extra.update(self.after_aggregate(server_round, state, replies, new_state))
        up = sum(int(r.metrics.get(P.BYTES_OUT, 0)) for r in replies)
        down = sum(int(r.metrics.get(P.BYTES_IN, 0)) for r in replies)
        self.totals["bytes_up"] += up
        self.totals["bytes_down"] += down
        late = sum(1 for reason in failures.values() if reason.startswith(TIMEOUT))
        rejected = sum(1 for reason in failures.values() if reason.startswith(INVALID))
        self.log({"event": "round", "system": s.system, "round": server_round,
                  "clients": int(replies[0].metrics[P.NUM_CLIENTS]) if secure else len(replies),
                  "failed": len(failures), "rejected": rejected, "stragglers": late,
                  "seconds": time.perf_counter() - t0, "end_time": time.time(),
                  "bytes_down": down, "bytes_up": up, **self.algo.round_info(), **extra})
        if self.evaluate is not None:
            self.evaluate(server_round, new_state)
        crash_point(s.system, server_round, "evaluate")
        self.totals["seconds"] += time.perf_counter() - t0
        self.totals["rounds"] = server_round
        if self.checkpoints is not None:
            self.checkpoints.save(s.system, RoundCheckpoint(
                server_round, new_state, self.algo.state_dict(), dict(self.totals), self.metrics_size()))
        return new_state


def round_payloads(algo: Algorithm, server_round: int, state: Arrays, clients: Sequence[int],
                   config: dict[str, Any], per_client: Optional[Callable[[int], dict]] = None
                   ) -> dict[int, Payload]:
    """Each client's payload: the algorithm's arrays for ``server_round``, and as config the round
    values ``config``, the client's own (``per_client``: rank, budget), then the algorithm's keys."""
    payloads = {}
    for pid in clients:
        p = algo.configure(server_round, pid, state)
        payloads[pid] = Payload(p.arrays, {**config, **(per_client(pid) if per_client else {}), **p.config})
    return payloads


TIMEOUT = "timeout"  # failure reasons of replies that came too late ...
INVALID = "invalid reply"  # ... and of replies the check rejected


def validated_replies(algo: Algorithm, server_round: int, state: Arrays, clients: Sequence[int],
                      raw: dict[int, RawReply], failures: dict[int, str], *,
                      sizes: Optional[Sequence[int]] = None, max_update_norm: float = 0.0) -> list[Reply]:
    """The valid replies of ``clients`` in partition order (`protocol.validate_reply` against what
    ``algo`` expects from each); a missing, self-reported failed or malformed reply is added to
    ``failures`` (partition -> reason) instead, so it never reaches an aggregate. With ``sizes``
    (each partition's training examples, known to the server) a reply claiming another example
    count is rejected; with ``max_update_norm`` > 0 so is one whose update (reply state minus the
    global state) is longer than that."""
    replies = []
    for pid in sorted(clients):
        if pid in failures:
            continue
        if pid not in raw:
            failures[pid] = "no reply"
        elif raw[pid].metrics.get(P.CLIENT_FAILED):
            failures[pid] = "client reported failure"
        else:
            try:
                reply = P.validate_reply(pid, raw[pid].arrays, raw[pid].metrics,
                                         algo.expected(server_round, pid, state), who=f"client {pid}")
                if sizes is not None and reply.num_examples != sizes[pid]:
                    raise P.ReplyError(f"client {pid} claims {reply.num_examples} examples, its partition "
                                       f"has {sizes[pid]}")
                if max_update_norm > 0:
                    from fedmllm.federated.algorithms.base import STATE
                    from fedmllm.federated.attacks.base import delta, norm

                    length = norm(delta(reply.arrays[STATE], state))
                    if length > max_update_norm:
                        raise P.ReplyError(f"client {pid}'s update norm {length:.4g} exceeds "
                                           f"federated.max_update_norm = {max_update_norm:g}")
                replies.append(reply)
            except P.ReplyError as e:
                failures[pid] = f"{INVALID}: {e}"
    return replies
