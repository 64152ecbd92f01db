"""``iid``: every client gets a uniformly random, equal-sized share of the pooled samples.

flwr_datasets ``IidPartitioner`` cuts contiguous shards (sizes differ by at most one); the rows
are shuffled by the seed first (`pool_dataset`), which is what makes the shards random.
"""

from __future__ import annotations

from flwr_datasets.partitioner import IidPartitioner

from fedmllm.data.partition.base import (
    Clients, PartitionerSpec, Pool, collect, flwr_errors, pool_dataset, register_partitioner)


def iid(pool: Pool, tasks: list[str], num_clients: int, seed: int) -> Clients:
    """Uniform random equal split of the pooled samples."""
    with flwr_errors("iid", "Use fewer clients than samples."):
        return collect(IidPartitioner(num_partitions=num_clients), pool_dataset(pool, seed),
                       num_clients, tasks)


register_partitioner(PartitionerSpec("iid", iid, {}, "uniform random equal-sized shares"))
