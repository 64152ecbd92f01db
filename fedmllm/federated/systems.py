"""The systems of a federated experiment: strategies x privacy settings x attacks, by name.

A config's ``federated.strategies`` is crossed with ``privacy.noise_multipliers`` (when
``privacy.mode`` is on) and with ``attack.names`` (plus the clean run, ``attack.clean``). Each
combination is one system, trained from the same initial state on the same partition:
``fedavg`` (clean), ``fedavg+sign_flip`` (20% of the clients flip their updates), ``fedavg+dp1``
(DP with noise multiplier 1), ``fedavg+dp1+backdoor``. Everything keyed by system (checkpoints,
client stores, results, reports) uses the name; `system_spec` recovers its parts.

Which clients are malicious or slow is fixed per experiment: ``round(fraction x N)`` partitions
drawn by a seeded ``random.Random`` (a different stream for attackers and stragglers), the same in
every system and every round, so the clean and attacked runs differ only by the attack.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional

from fedmllm.config import Config
from fedmllm.errors import UserError


@dataclass(frozen=True)
class SystemSpec:
    """One federated system: the strategy, and its privacy setting and attack (if any)."""

    name: str
    strategy: str
    noise_multiplier: Optional[float] = None  # DP on with this z; None: DP off
    attack: str = ""  # "" = no attackers

    @property
    def private(self) -> bool:
        return self.noise_multiplier is not None


def _dp_tag(z: float) -> str:
    return f"dp{float(z):g}"


def strategy_systems(cfg: Config) -> list[SystemSpec]:
    """Every strategy system of ``cfg``, strategy-major (then privacy, then attack) order."""
    noises: list[Optional[float]] = [float(z) for z in cfg.privacy.noise_multipliers] \
        if cfg.privacy.mode != "off" else [None]
    attacks = ([""] if cfg.attack.clean else []) + list(cfg.attack.names)
    out = []
    for strategy in cfg.federated.strategies:
        for z in noises:
            for attack in attacks:
                parts = [strategy] + ([_dp_tag(z)] if z is not None else []) + ([attack] if attack else [])
                out.append(SystemSpec("+".join(parts), strategy, z, attack))
    return out


def system_spec(cfg: Config, name: str) -> SystemSpec:
    """The spec of strategy system ``name``; a bare strategy name the config does not list is
    that strategy, clean (e.g. a loop run outside the config's grid); a `UserError` otherwise."""
    for spec in strategy_systems(cfg):
        if spec.name == name:
            return spec
    if "+" not in name:
        return SystemSpec(name, name)
    raise UserError(f"system {name!r} is not one of this experiment's strategy systems: "
                    f"{', '.join(s.name for s in strategy_systems(cfg))}")


def chosen_clients(seed: int, num_clients: int, fraction: float, stream: str) -> list[int]:
    """``round(fraction x num_clients)`` partitions (sorted), drawn reproducibly for ``stream``
    ("attackers", "stragglers"); at least one when ``fraction`` > 0."""
    if fraction <= 0:
        return []
    k = min(num_clients, max(1, round(fraction * num_clients)))
    rng = random.Random(f"{seed}/{stream}")
    return sorted(rng.sample(range(num_clients), k))


def attackers(cfg: Config) -> list[int]:
    """The malicious partitions of the experiment (in every attacked system)."""
    return chosen_clients(cfg.seed, cfg.federated.num_clients, cfg.attack.fraction, "attackers")


def stragglers(cfg: Config) -> list[int]:
    """The slowed-down partitions (``federated.straggler_fraction``)."""
    fed = cfg.federated
    if fed.straggler_slowdown <= 1:
        return []
    return chosen_clients(cfg.seed, fed.num_clients, fed.straggler_fraction, "stragglers")


def client_extras(cfg: Config, spec: SystemSpec) -> dict[int, dict[str, Any]]:
    """Per-client config values a system adds to its train messages: the attack (and its
    options) for the malicious clients, the slowdown for the stragglers."""
    from fedmllm.federated import protocol as P

    out: dict[int, dict[str, Any]] = {}
    if spec.attack:
        from fedmllm.federated.attacks import build_attack

        options = build_attack(spec.attack, cfg.attack.options.get(spec.attack, {})).options
        for pid in attackers(cfg):
            out.setdefault(pid, {}).update({P.ATTACK: spec.attack,
                                            **{P.ATTACK_OPTION + k: v for k, v in options.items()}})
    for pid in stragglers(cfg):
        out.setdefault(pid, {})[P.SLOWDOWN] = float(cfg.federated.straggler_slowdown)
    return out
