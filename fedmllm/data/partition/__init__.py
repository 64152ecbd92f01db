"""Partitioners: how the pooled training samples of the downstream tasks are split over clients.

One file per rule, each registered in `PARTITIONERS` (names: iid, task_dirichlet, one_task,
label_dirichlet, quantity). Entry point: `partition(name, pool, num_clients, seed, options)`;
client-local test splits: `split_test`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from fedmllm.data.partition.base import (
    PARTITIONERS, Partition, PartitionerSpec, Pool, register_partitioner)
from fedmllm.data.partition.holdout import split_test
from fedmllm.errors import UserError

# Registrations (one file per partitioner).
from fedmllm.data.partition import (  # noqa: E402,F401,I001
    iid, label_dirichlet, one_task, quantity, task_dirichlet)

__all__ = ["PARTITIONERS", "Partition", "PartitionerSpec", "make_partition", "partition",
           "register_partitioner", "split_test"]


def partition(name: str, pool: Pool, num_clients: int, seed: int = 0,
              options: Optional[Mapping[str, Any]] = None) -> Partition:
    """Split ``pool`` (task -> samples) over ``num_clients`` clients with the rule ``name``.

    ``options`` override the rule's defaults (`PartitionerSpec.options`); an unknown option is a
    UserError listing the valid ones. Same pool, seed and options give the same partition.
    """
    spec = PARTITIONERS.get(name)
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise UserError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(spec.options))
    if unknown:
        valid = ", ".join(sorted(spec.options)) or "(none)"
        raise UserError(f"unknown option(s) {', '.join(unknown)} for partitioner {name!r}; "
                        f"valid: {valid}")
    empty = [t for t, s in pool.items() if not s]
    if not pool or empty:
        raise UserError("cannot partition an empty pool "
                        f"(empty tasks: {', '.join(empty) or 'all'})")
    full = {**spec.options, **opts}
    tasks = list(pool)
    clients = spec.fn(pool, tasks, num_clients, int(seed), **full)
    result = Partition(name, num_clients, int(seed), full, tasks,
                       {t: len(pool[t]) for t in tasks}, clients)
    result.check_exact_cover()
    return result


def make_partition(name: str, pool: Pool, num_clients: int, seed: int = 0,
                   alpha: Optional[float] = None, **options: Any) -> Partition:
    """`partition` for config callers: ``alpha`` (one config field for all rules) is applied
    only to partitioners that have an ``alpha`` option and ignored by the others (iid,
    one_task, quantity in a non-Dirichlet mode still accept it); ``options`` are strict."""
    spec = PARTITIONERS.get(name)
    if alpha is not None and "alpha" in spec.options:
        options = {"alpha": alpha, **options}
    return partition(name, pool, num_clients, seed, options)
