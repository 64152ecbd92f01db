"""An attack: what a malicious client does to its data before training or to its update after.

``update`` below is the client's shared state minus the state it received this round
(delta = trained - received), key by key; keys it did not receive count from zero.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

from fedmllm.options import resolve_options
from fedmllm.registry import Registry

Arrays = dict[str, np.ndarray]


class Attack:
    """Base class: no effect on data or update; subclasses override one (or both).

    Class attributes: ``name`` (registry name), ``description`` (one line with the source),
    ``defaults`` (the attack's options, ``[attack.options.<name>]``).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, options: Optional[Mapping[str, Any]] = None):
        self.options = resolve_options(f"attack {self.name!r}", dict(options or {}), self.defaults)
        self.validate()

    def validate(self) -> None:
        """Range checks of ``self.options`` (raise `UserError`)."""

    def poison_samples(self, samples: Sequence, rng: np.random.Generator) -> list:
        """The samples the malicious client trains on (default: its own, unchanged)."""
        return list(samples)

    def poison_update(self, trained: Arrays, received: Arrays, rng: np.random.Generator) -> Arrays:
        """The state the malicious client uploads instead of ``trained`` (default: unchanged)."""
        return trained


def delta(trained: Arrays, received: Arrays) -> Arrays:
    """trained - received per key (float64); a key not received (or of another shape) from 0."""
    out = {}
    for k, v in trained.items():
        r = received.get(k)
        base = np.asarray(r, dtype=np.float64) if r is not None and np.shape(r) == np.shape(v) else 0.0
        out[k] = np.asarray(v, dtype=np.float64) - base
    return out


def rebuild(update: Arrays, trained: Arrays, received: Arrays) -> Arrays:
    """received + update per key, in the trained arrays' dtypes (the inverse of `delta`)."""
    out = {}
    for k, v in trained.items():
        r = received.get(k)
        base = np.asarray(r, dtype=np.float64) if r is not None and np.shape(r) == np.shape(v) else 0.0
        out[k] = (base + update[k]).astype(np.asarray(v).dtype)
    return out


def norm(update: Arrays) -> float:
    """The L2 norm of a whole update (all keys as one vector)."""
    return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in update.values())))


ATTACKS: Registry[type[Attack]] = Registry("attack", populate=lambda: _populate())


def _populate() -> None:
    from fedmllm.registry import import_modules

    import_modules("fedmllm.federated.attacks")


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: check the declaration and register ``cls`` under ``cls.name``."""
    if not cls.name or not cls.description:
        raise ValueError(f"{cls.__name__}: an attack needs a name and a description")
    return ATTACKS.register(cls.name, cls)


def build_attack(name: str, options: Optional[Mapping[str, Any]] = None) -> Attack:
    """The registered attack ``name`` bound to ``options`` (errors are `UserError`)."""
    return ATTACKS.get(name)(options)


def options_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """An attack's options from a train message's config (``attack.<option>`` keys)."""
    from fedmllm.federated.protocol import ATTACK_OPTION

    return {k[len(ATTACK_OPTION):]: v for k, v in config.items() if k.startswith(ATTACK_OPTION)}


class ScaledUpdate(Attack):
    """Upload received + ``sign`` x factor x (trained - received) (sign_flip: -1, scale: +1)."""

    sign: ClassVar[float] = 1.0
    defaults = {"factor": 1.0}

    def validate(self) -> None:
        from fedmllm.errors import UserError

        if self.options["factor"] <= 0:
            raise UserError(f"attack {self.name!r} option 'factor' must be > 0, got {self.options['factor']}")

    def poison_update(self, trained, received, rng):
        c = self.sign * self.options["factor"]
        return rebuild({k: c * v for k, v in delta(trained, received).items()}, trained, received)
