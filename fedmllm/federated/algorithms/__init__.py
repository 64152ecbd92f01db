"""Federated algorithms, one file each, registered in `ALGORITHMS` (Flower-free).

Every entry is an `Algorithm` with a state plan, a server half and a client half (see base.py).
Adding one: a file here with one ``@register_algorithm`` class, its name in `MODULES`, and a row
in tests/test_algorithms.py.
"""

from __future__ import annotations

from fedmllm.federated.algorithms.base import (
    ALGORITHMS, GLOBAL, MODEL, STATE, Algorithm, LocalResult, Payload, Reply, StatePlan,
    build_algorithm, register_algorithm)

MODULES = ("fedavg", "fedprox", "scaffold", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
            "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")

__all__ = ["ALGORITHMS", "GLOBAL", "MODEL", "STATE", "Algorithm", "LocalResult", "Payload", "Reply",
           "StatePlan", "build_algorithm", "register_algorithm"]
