"""Simulated adversaries, one file each, registered in `ATTACKS` (Flower-free).

A system ``<strategy>+<attack>`` (`fedmllm.federated.systems`) tells the malicious clients which
attack to run through their train messages (``attack`` and ``attack.<option>`` config keys): the
simulator plays the adversary. Model poisoning (`Attack.poison_update`) rewrites the trained
update before it is uploaded; data poisoning (`Attack.poison_samples`) rewrites the client's
training samples. Both are deterministic given the client, round and seed.
"""

from __future__ import annotations

from fedmllm.federated.attacks.base import ATTACKS, Attack, build_attack, options_from_config, register_attack

__all__ = ["ATTACKS", "Attack", "build_attack", "options_from_config", "register_attack"]
