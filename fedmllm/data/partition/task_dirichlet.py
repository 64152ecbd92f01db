"""``task_dirichlet``: task (dataset) skew through a Dirichlet(alpha) split of each task.

flwr_datasets ``DirichletPartitioner(partition_by="task")`` (Yurochkin et al. 2019, as in most FL
benchmarks): for every task, the shares the N clients get of it are drawn from Dir(alpha * 1_N).
Small alpha gives each task to few clients, so clients hold few tasks; large alpha approaches
iid. Flower redraws everything when a client ends up with fewer than ``min_size`` samples and
gives up after 10 redraws; with only six "classes" this happens for alpha below ~0.05 with ten
clients (a task's mass lands on one client), and we surface it as a UserError. Note the variant
of Hsu et al. 2019 (each client's mix ~ Dir(alpha p)) is a different model; not this one.
"""

from __future__ import annotations

from flwr_datasets.partitioner import DirichletPartitioner

from fedmllm.data.partition.base import (
    Clients, PartitionerSpec, Pool, collect, flwr_errors, pool_dataset, register_partitioner)
from fedmllm.errors import UserError


def task_dirichlet(pool: Pool, tasks: list[str], num_clients: int, seed: int, *, alpha: float,
                   min_size: int, self_balancing: bool) -> Clients:
    """Per task, client shares ~ Dir(alpha); redrawn (Flower, up to 10 times) below min_size."""
    if not float(alpha) > 0:
        raise UserError(f"task_dirichlet: alpha must be > 0, got {alpha}")
    part = DirichletPartitioner(num_partitions=num_clients, partition_by="task",
                                alpha=float(alpha), min_partition_size=int(min_size),
                                self_balancing=bool(self_balancing), shuffle=False, seed=seed)
    advice = "Raise alpha, lower min_size, or use fewer clients."
    with flwr_errors("task_dirichlet", advice):
        return collect(part, pool_dataset(pool, seed), num_clients, tasks)


register_partitioner(PartitionerSpec(
    "task_dirichlet", task_dirichlet, {"alpha": 0.5, "min_size": 1, "self_balancing": False},
    "per task, client shares ~ Dirichlet(alpha) (flwr_datasets DirichletPartitioner)"))
