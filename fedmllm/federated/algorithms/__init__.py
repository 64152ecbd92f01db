"""Federated algorithms, one file each, registered in `ALGORITHMS` (Flower-free).

Every entry is an `Algorithm` with a state plan, a server half and a client half (see base.py).
Adding one: a file here with one ``@register_algorithm`` class (every module of this package is
imported on the registry's first lookup) and, where Flower has the same rule, a row in the
Flower-equality test of tests/test_algorithms.py; the contract test runs every registered name.
"""

from __future__ import annotations

from fedmllm.federated.algorithms.base import (
    ALGORITHMS, GLOBAL, MODEL, STATE, Algorithm, LocalResult, Payload, Reply, StatePlan,
    build_algorithm, register_algorithm)

__all__ = ["ALGORITHMS", "GLOBAL", "MODEL", "STATE", "Algorithm", "LocalResult", "Payload", "Reply",
           "StatePlan", "build_algorithm", "register_algorithm"]
