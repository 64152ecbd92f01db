"""A collaboration paradigm: a two-sided federated algorithm whose server also holds a large model.

Every paradigm is an `Algorithm` of the federated core (`fedmllm.federated.algorithms.base`), so
the same round loop, transports (Flower on Ray, in process), reply checks and per-round
checkpoints drive it. What it adds:

- **A large side.** The experiment hands the paradigm a `Sides` object (`bind`): the large model
  and the aggregated small model on the server, the public set, the token alignment between the
  two tokenizers and the server-side training (`fedmllm.collab.distill`). `server_step` runs after
  the clients' states are aggregated and may change the small global state (distillation from the
  large model) and the large model's LoRA state (``self.large``), which is part of the paradigm's
  checkpointed server state, so a killed run resumes with it.
- **Payloads that are not parameters.** `client_outputs` lets a client upload, besides (or
  instead of) its trained state, what its model computes on the public set: answer-position
  logits (`fedmkt`) or pooled representations (`repr_align`); `expected` names their shapes so
  the one reply check validates them like any state.

Registered in `PARADIGMS` (one file each in ``fedmllm/collab/paradigms``); clients look the
client half up by the name in the message (`fedmllm.federated.client.ClientRuntime.algorithm`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from fedmllm.federated.algorithms.base import STATE, Algorithm, Arrays, Groups, Payload, Reply, merge
from fedmllm.federated.aggregate import weighted_average
from fedmllm.registry import Registry

OUTPUTS = "public"  # reply record of what a client's model computed on the public set
TEACHER = "teacher"  # payload record of the large model's outputs sent down to clients


class Paradigm(Algorithm):
    """FedAvg of the small model's shared state plus a server step; subclasses override.

    Class attributes (besides `Algorithm`'s):
        family: "baseline" | "logit" (output KD) | "parameter" (offsite) | "decode" (proxy) |
            "representation".
        trains_small: the clients train the small model (offsite's clients train an emulator of the
            large one instead; large_zero / large_pooled / proxy run no rounds).
        rounds: False when the paradigm has no federated rounds of its own.
        large_changes: the large model's weights change (False: large_zero, small_fedavg, proxy).
    """

    family: ClassVar[str] = "logit"
    trains_small: ClassVar[bool] = True
    rounds: ClassVar[bool] = True
    large_changes: ClassVar[bool] = True

    def reset(self) -> None:
        self.sides = None
        self.large: Optional[Arrays] = None  # the large model's LoRA state (None: the base)
        self._info: dict[str, Any] = {}

    def bind(self, sides) -> None:
        """Attach the server's `fedmllm.collab.experiment.Sides` (large model, public set, ...)."""
        self.sides = sides
        if self.large is None and sides is not None:
            self.large = sides.large.initial_state()

    # -- server half -----------------------------------------------------------------------
    def aggregate(self, server_round: int, global_state: Arrays, replies: Sequence[Reply]) -> Arrays:
        small = merge(global_state, weighted_average([r.arrays[STATE] for r in replies],
                                                     [r.num_examples for r in replies]))
        return self.server_step(server_round, small, replies)

    def server_step(self, server_round: int, small: Arrays, replies: Sequence[Reply]) -> Arrays:
        """After aggregation: may update ``self.large`` and return a changed small state."""
        return small

    def round_info(self) -> dict[str, Any]:
        return dict(self._info)

    def state_dict(self) -> dict[str, Any]:
        return {"arrays": {"large": dict(self.large)} if self.large is not None else {}, "values": {}}

    def load_state_dict(self, state) -> None:
        large = state.get("arrays", {}).get("large")
        self.large = {k: np.asarray(v) for k, v in large.items()} if large else self.large

    def expected(self, server_round: int, client: int, global_state: Arrays):
        shapes = super().expected(server_round, client, global_state)
        shapes.update(self.output_shapes(client))
        return shapes

    def output_shapes(self, client: int) -> dict[str, dict[str, tuple[int, ...]]]:
        """Names and shapes of the public-set outputs a client uploads (default: none)."""
        return {}

    # -- client half -----------------------------------------------------------------------
    def client_outputs(self, payload: Payload, model, processor, cfg) -> Groups:
        """What the client's trained model computes on the public set, for the reply (default: none)."""
        return {}


def _populate() -> None:
    from fedmllm.registry import import_modules

    import_modules("fedmllm.collab.paradigms")


PARADIGMS: Registry[type[Paradigm]] = Registry("collaboration paradigm", populate=_populate)


def register_paradigm(cls: type[Paradigm]) -> type[Paradigm]:
    if not cls.name or not cls.description:
        raise ValueError(f"{cls.__name__}: a paradigm needs a name and a description")
    return PARADIGMS.register(cls.name, cls)
