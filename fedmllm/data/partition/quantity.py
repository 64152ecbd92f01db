"""``quantity``: quantity skew; clients hold different amounts of iid-mixed data.

``mode``:
- ``"dirichlet"`` (default): client sizes ~ n * Dir(alpha * 1_N), each at least ``min_size``,
  rounded by largest remainder, then flwr_datasets ``SizePartitioner``. The size draw is ours:
  Flower has no random-size partitioner.
- ``"linear"`` / ``"square"`` / ``"exponential"``: flwr_datasets ``LinearPartitioner`` /
  ``SquarePartitioner`` / ``ExponentialPartitioner``; client c's size is proportional to (c+1),
  (c+1)^2, e^(c+1) (deterministic; the rounding remainder goes to the last client).
Rows are shuffled by the seed first, so each client's task mix is random, about the pool's.
"""

from __future__ import annotations

import numpy as np
from flwr_datasets.partitioner import (
    ExponentialPartitioner, LinearPartitioner, SizePartitioner, SquarePartitioner)

from fedmllm.data.partition.base import (
    Clients, PartitionerSpec, Pool, apportion, collect, flwr_errors, pool_dataset,
    register_partitioner)
from fedmllm.errors import UserError

SIZE_FUNCTIONS = {"linear": LinearPartitioner, "square": SquarePartitioner,
                  "exponential": ExponentialPartitioner}
MODES = ("dirichlet", *SIZE_FUNCTIONS)


def dirichlet_sizes(n: int, num_clients: int, alpha: float, min_size: int, seed: int) -> list[int]:
    """min_size each, plus the rest apportioned by q ~ Dir(alpha * 1_N)."""
    if n < num_clients * min_size:
        raise UserError(f"quantity: {n} samples cannot give {num_clients} clients "
                        f"min_size={min_size} each")
    q = np.random.default_rng(seed).dirichlet(np.full(num_clients, float(alpha)))
    return [min_size + s for s in apportion(n - num_clients * min_size, q)]


def quantity(pool: Pool, tasks: list[str], num_clients: int, seed: int, *, mode: str,
             alpha: float, min_size: int) -> Clients:
    """Different client sizes, iid content."""
    if mode not in MODES:
        raise UserError(f"quantity: unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "dirichlet":
        if not float(alpha) > 0:
            raise UserError(f"quantity: alpha must be > 0, got {alpha}")
        n = sum(len(v) for v in pool.values())
        part = SizePartitioner(dirichlet_sizes(n, num_clients, alpha, max(int(min_size), 1), seed))
    else:
        part = SIZE_FUNCTIONS[mode](num_partitions=num_clients)
    with flwr_errors("quantity", "Use fewer clients or the 'dirichlet' mode."):
        return collect(part, pool_dataset(pool, seed), num_clients, tasks)


register_partitioner(PartitionerSpec(
    "quantity", quantity, {"mode": "dirichlet", "alpha": 1.0, "min_size": 1},
    "client sizes ~ Dirichlet(alpha) or linear/square/exponential in the client id"))
