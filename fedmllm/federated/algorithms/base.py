"""A federated algorithm: one object with a state plan, a server half and a client half.

The round loop (`fedmllm.federated.rounds`) and the clients (`fedmllm.federated.client`) drive any
registered `Algorithm` through the methods below; neither ever branches on an algorithm's name.

- **State plan** (`plan`): for the tuning method's state, which keys one client *shares* (sent,
  trained, uploaded, aggregated), keeps *local* (trained, kept on the client across rounds, never
  uploaded) or keeps *frozen* (never trained). Per client, because ranks may differ.
- **Server half**: `configure` one client's `Payload` for a round; `expected` the arrays its reply
  must hold (names and shapes: `fedmllm.federated.protocol.validate_reply` checks them); a pure
  `aggregate` of the validated replies into the new global state; `state_dict` /
  `load_state_dict` of the server state (moments, controls) for the per-round checkpoint.
- **Client half**: `prepare` the initial trainable state and the training-loop hooks from the
  payload and the client's local state; `finish` the trained state into the reply's arrays and the
  new local state. The client half reads its settings only from ``payload.config`` (named message
  keys, as Flower's FedProx sends ``proximal-mu``), so the client needs no server options.

Arrays are numpy on the wire and on the server; the client runtime converts to torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

from fedmllm.errors import UserError
from fedmllm.federated.aggregate import weighted_average
from fedmllm.options import resolve_options
from fedmllm.registry import Registry

Arrays = dict[str, np.ndarray]  # one named state: key -> array
Groups = dict[str, Arrays]  # several named states: record name -> state
Shapes = dict[str, dict[str, tuple[int, ...]]]  # record name -> key -> shape

# Record names (ArrayRecords on the wire, groups of a client's local state).
GLOBAL = "global"  # server -> client: the shared part of the global state
STATE = "state"  # client -> server: the client's trained shared state
MODEL = "model"  # local state: the client's own values of its ``local`` keys


@dataclass(frozen=True)
class StatePlan:
    """Which keys of the tuning method's state one client shares, keeps local or freezes."""

    shared: tuple[str, ...]
    local: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for role in ("shared", "local", "frozen"):
            for key in getattr(self, role):
                if key in seen:
                    raise ValueError(f"state key {key!r} is both {seen[key]} and {role}")
                seen[key] = role

    def trained(self) -> tuple[str, ...]:
        """Keys the client trains (shared + local)."""
        return self.shared + self.local


@dataclass
class Payload:
    """What the server sends one client in one round: named states and config values."""

    arrays: Groups
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    """One client's validated reply: its named states, example count and metrics."""

    partition_id: int
    num_examples: int
    arrays: Groups
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class LocalResult:
    """What one client's local training produced, handed to `Algorithm.finish`."""

    state: Arrays  # the method's whole state after training (shared, local and frozen keys)
    steps: int
    lr: float
    hooks: Sequence[Any] = ()


class Algorithm:
    """Base class: FedAvg-shaped defaults for everything; subclasses override what differs.

    Class attributes:
        name: registry name.
        description: one line with the source (paper, equation, or the Flower class it equals).
        defaults: the algorithm's own options, name -> default (``[strategy_options.<name>]``).
        handles_non_averageable: True when the new global state is one client's state unchanged
            (selection, e.g. Krum), so state that must not be mixed across clients survives.
        heterogeneous_ranks: True when clients may hold LoRA adapters of different ranks
            (``federated.client_ranks``); `client_rank` gives client k's.
        personalized: True when clients keep local keys, so each client's own model differs
            from the global one (evaluated on its local test split).
        secure_aggregatable: True when `aggregate` needs only the weighted mean of the replies'
            ``state`` (FedAvg, FedProx, FedIT, FFA-LoRA), so it runs under secure aggregation.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    handles_non_averageable: ClassVar[bool] = False
    heterogeneous_ranks: ClassVar[bool] = False  # clients may hold LoRA adapters of other ranks
    personalized: ClassVar[bool] = False  # clients keep part of their model (local keys)
    secure_aggregatable: ClassVar[bool] = False  # aggregate = example-weighted mean of the replies'
    # shared states and nothing else, so it can run on the sum secure aggregation reveals

    def __init__(self, options: Optional[Mapping[str, Any]] = None, *, num_clients: int = 1):
        """``options`` are checked against `defaults` (unknown keys, types, NaN/Inf: `UserError`);
        ``num_clients`` is the number of partitions N of the experiment."""
        self.options = resolve_options(f"strategy {self.name!r}", dict(options or {}), self.defaults)
        self.num_clients = int(num_clients)
        self.ranks: Optional[list[int]] = None  # per-client LoRA ranks (None: all the global rank)
        self.lora_scaling: Optional[float] = None  # s = alpha / r_g of the global LoRA adapter
        try:
            self.validate()
        except ValueError as e:
            raise UserError(f"strategy {self.name!r}: {e}") from None
        self.reset()

    def validate(self) -> None:
        """Range checks of ``self.options`` (raise ValueError)."""

    def reset(self) -> None:
        """Allocate empty server state (moments, controls); `init` fills it before round 1."""

    def set_client_ranks(self, ranks: Optional[Sequence[int]]) -> None:
        """Per-client LoRA ranks r_k (None: every client has the global adapter's rank)."""
        self.ranks = None if ranks is None else [int(r) for r in ranks]

    def client_rank(self, client: int) -> Optional[int]:
        """Client k's LoRA rank, or None when all ranks are the global one."""
        return None if self.ranks is None else self.ranks[client]

    def set_lora_scaling(self, scaling: Optional[float]) -> None:
        """The LoRA scaling s = alpha / r_g (one for every client rank), for rules that form the
        effective update s B A on the server (FLoRA, FedEx-LoRA, FlexLoRA); None: not LoRA."""
        self.lora_scaling = None if scaling is None else float(scaling)

    def min_replies(self) -> int:
        """The fewest valid replies a round can aggregate (robust rules need more than one)."""
        return 1

    def resolved_options(self) -> dict[str, Any]:
        """Every option's effective value (written to the run's config.toml)."""
        return dict(self.options)

    # -- state plan ------------------------------------------------------------------------
    def plan(self, client: int, shapes: Mapping[str, tuple[int, ...]]) -> StatePlan:
        """Default: every key of the method's state is shared."""
        return StatePlan(shared=tuple(shapes))

    # -- server half -----------------------------------------------------------------------
    def init(self, global_state: Arrays) -> Optional[Arrays]:
        """Called once before round 1 with the initial global state: allocate server state; may
        return an extended initial state (e.g. zero LoRA residuals), else None."""
        return None

    def client_config(self, server_round: int) -> dict[str, Any]:
        """Config values the client half needs (named message keys)."""
        return {}

    def configure(self, server_round: int, client: int, global_state: Arrays) -> Payload:
        """The shared part of the global state and the client config."""
        plan = self.plan(client, {k: v.shape for k, v in global_state.items()})
        return Payload({GLOBAL: {k: global_state[k] for k in plan.shared}},
                       self.client_config(server_round))

    def expected(self, server_round: int, client: int, global_state: Arrays) -> Shapes:
        """Names and shapes the client's reply must hold: its trained shared state."""
        plan = self.plan(client, {k: v.shape for k, v in global_state.items()})
        return {STATE: {k: tuple(global_state[k].shape) for k in plan.shared}}

    def aggregate(self, server_round: int, global_state: Arrays, replies: Sequence[Reply]) -> Arrays:
        """The new global state from validated replies (in partition order). Default: FedAvg."""
        return merge(global_state, weighted_average([r.arrays[STATE] for r in replies],
                                                    [r.num_examples for r in replies]))

    def round_info(self) -> dict[str, Any]:
        """Extra JSON-able facts of the last aggregation for the round event (e.g. FLoRA's
        stacked downlink size); default none."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Server state to checkpoint: ``{"arrays": Groups, "values": JSON-able dict}``."""
        return {"arrays": {}, "values": {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    # -- client half -----------------------------------------------------------------------
    def prepare(self, payload: Payload, local_state: Groups, method: Any, initial: Arrays
                ) -> tuple[Arrays, list, StatePlan]:
        """(initial trainable state, hooks, plan): the payload's shared keys, the client's own
        ``local`` keys (the method's ``initial`` values before its first round), the rest from
        ``initial``. ``method`` is the tuning method (hooks key their tensors through it)."""
        received = payload.arrays[GLOBAL]
        own = local_state.get(MODEL, {})
        shapes = {k: v.shape for k, v in initial.items()}
        plan = self.client_plan(payload, shapes, received)
        state = dict(initial)
        state.update({k: own[k] for k in plan.local if k in own})
        state.update(received)
        return state, self.hooks(payload, local_state, method, state), plan

    def client_plan(self, payload: Payload, shapes: Mapping[str, tuple[int, ...]],
                    received: Mapping[str, np.ndarray]) -> StatePlan:
        """The plan as the client sees it: received keys shared, others local (default)."""
        return StatePlan(shared=tuple(k for k in shapes if k in received),
                         local=tuple(k for k in shapes if k not in received))

    def hooks(self, payload: Payload, local_state: Groups, method: Any, state: Arrays) -> list:
        """Training-loop hooks (`fedmllm.training.hooks`) for this round. Default: none."""
        return []

    def finish(self, payload: Payload, local_state: Groups, plan: StatePlan,
               result: LocalResult) -> tuple[Groups, Groups]:
        """(reply arrays, new local state): the trained shared keys go up, local keys stay."""
        reply = {STATE: {k: result.state[k] for k in plan.shared}}
        new_local = dict(local_state)
        if plan.local:
            new_local[MODEL] = {k: result.state[k] for k in plan.local}
        return reply, new_local


def as_tensors(arrays: Mapping[str, Any]) -> dict:
    """name -> torch tensor (zero-copy from numpy where possible), for training-loop hooks."""
    import torch

    return {k: torch.as_tensor(v) for k, v in arrays.items()}


def as_arrays(tensors: Mapping[str, Any]) -> Arrays:
    """name -> numpy array (torch tensors detached, moved to CPU; bfloat16 as float32)."""
    from fedmllm.federated.aggregate import to_numpy

    return {k: to_numpy(v) for k, v in tensors.items()}


def merge(global_state: Arrays, update: Mapping[str, np.ndarray]) -> Arrays:
    """``global_state`` with the aggregated keys replaced (keys no client shares stay)."""
    out = dict(global_state)
    out.update(update)
    return out


def _populate() -> None:
    """Import every module of this package once: each registers its algorithm (one file each)."""
    from fedmllm.registry import import_modules

    import_modules("fedmllm.federated.algorithms")


# Registered under the user-facing word: configs name them in ``federated.strategies``.
ALGORITHMS: Registry[type[Algorithm]] = Registry("strategy", populate=_populate)


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: check the declaration and register ``cls`` under ``cls.name``."""
    if not cls.name or not cls.description:
        raise ValueError(f"{cls.__name__}: an algorithm needs a name and a description")
    return ALGORITHMS.register(cls.name, cls)


def build_algorithm(name: str, options: Optional[Mapping[str, Any]] = None, *,
                    num_clients: int = 1) -> Algorithm:
    """The registered algorithm ``name`` bound to ``options`` (errors are `UserError`)."""
    return ALGORITHMS.get(name)(options, num_clients=num_clients)
