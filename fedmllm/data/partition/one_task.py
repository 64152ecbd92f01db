"""``one_task``: each client holds one task; client c gets task c mod T (pool order).

flwr_datasets ``PathologicalPartitioner(num_classes_per_partition=1,
class_assignment_mode="first-deterministic")`` over the task id; a task's samples are split
evenly (``np.array_split``) among the clients that hold it. Needs num_clients >= number of
tasks, otherwise some task would be assigned to nobody.
"""

from __future__ import annotations

from flwr_datasets.partitioner import PathologicalPartitioner

from fedmllm.data.partition.base import (
    Clients, PartitionerSpec, Pool, collect, flwr_errors, pool_dataset, register_partitioner)
from fedmllm.errors import UserError


def one_task(pool: Pool, tasks: list[str], num_clients: int, seed: int) -> Clients:
    """Round-robin one task per client."""
    if num_clients < len(tasks):
        raise UserError(f"one_task needs num_clients >= number of tasks ({len(tasks)}: "
                        f"{', '.join(tasks)}), got {num_clients}; add clients or drop tasks")
    part = PathologicalPartitioner(num_partitions=num_clients, partition_by="task_id",
                                   num_classes_per_partition=1,
                                   class_assignment_mode="first-deterministic",
                                   shuffle=False, seed=seed)
    with flwr_errors("one_task", "Each task needs at least as many samples as its clients."):
        return collect(part, pool_dataset(pool, seed), num_clients, tasks)


register_partitioner(PartitionerSpec(
    "one_task", one_task, {}, "client c holds only task c mod T (flwr PathologicalPartitioner)"))
