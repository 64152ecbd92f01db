"""``label_dirichlet``: answer (label) skew within each task, every client sees every task.

For each task separately, flwr_datasets ``DirichletPartitioner(partition_by="label")`` splits
each answer's samples among the N clients with shares ~ Dir(alpha * 1_N) (Yurochkin et al. 2019).
``Sample.label`` is the first answer unless the task sets ``meta["label"]``; open-ended tasks have
thousands of distinct answers, so only the ``top_labels`` most frequent keep their identity and
the rest share one "<other>" class (else the split degenerates to iid, and costs O(n * labels)).

Written here (not in Flower): the per-task loop, label coarsening, and the size guarantee. Per
task we pass ``min_partition_size=0`` (a client may lack a task); Flower's own redraw would
demand min_size per task. Instead the whole draw is repeated with a new seed (up to
``MAX_DRAWS``) until every client holds at least ``min_size`` samples over all tasks.
InnerDirichletPartitioner would need client sizes fixed in advance, which this skew should not.
"""

from __future__ import annotations

from collections import Counter

from flwr_datasets.partitioner import DirichletPartitioner

from fedmllm.data.partition.base import (
    Clients, PartitionerSpec, Pool, check_min_size, collect, flwr_errors, pool_dataset,
    register_partitioner)
from fedmllm.errors import UserError

MAX_DRAWS = 10
OTHER = "<other>"


def _label_map(pool: Pool, top_labels: int):
    keep = {}
    for task, samples in pool.items():
        freq = Counter(s.label for s in samples)
        keep[task] = {lab for lab, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))
                      [:top_labels]}
    return lambda task, label: label if label in keep[task] else OTHER


def label_dirichlet(pool: Pool, tasks: list[str], num_clients: int, seed: int, *, alpha: float,
                    min_size: int, top_labels: int) -> Clients:
    """Per task and label, client shares ~ Dir(alpha); redrawn until every client >= min_size."""
    if not float(alpha) > 0:
        raise UserError(f"label_dirichlet: alpha must be > 0, got {alpha}")
    if int(top_labels) < 1:
        raise UserError(f"label_dirichlet: top_labels must be >= 1, got {top_labels}")
    label_map = _label_map(pool, int(top_labels))
    advice = "Raise alpha, lower min_size, or use fewer clients."
    for draw in range(MAX_DRAWS):
        clients: Clients = [{t: [] for t in tasks} for _ in range(num_clients)]
        for tid, task in enumerate(tasks):
            task_seed = seed * 1_000_003 + draw * 1009 + tid  # distinct, reproducible per task
            part = DirichletPartitioner(num_partitions=num_clients, partition_by="label",
                                        alpha=float(alpha), min_partition_size=0,
                                        shuffle=False, seed=task_seed)
            with flwr_errors("label_dirichlet",
                             f"Task {task!r} has {len(pool[task])} samples for {num_clients} "
                             "clients; use fewer clients."):
                collect(part, pool_dataset({task: pool[task]}, task_seed, label_map),
                        num_clients, tasks, clients=clients)
        try:
            check_min_size("label_dirichlet", clients, int(min_size), advice)
            return clients
        except UserError:
            if draw == MAX_DRAWS - 1:
                raise
    raise AssertionError("unreachable")


register_partitioner(PartitionerSpec(
    "label_dirichlet", label_dirichlet, {"alpha": 0.5, "min_size": 1, "top_labels": 20},
    "per task and answer, client shares ~ Dirichlet(alpha) (flwr DirichletPartitioner)"))
