"""Local test splits that follow the training partition.

Choice (documented for the lead): rather than re-running the partitioner on the test pool (which
would redraw Dirichlet shares and give a client a test mix unrelated to its training mix), the
test pool is divided so that each client's share of every task's test samples equals its share
of that task's training samples. With ``train_pool`` given, shares are taken per (task, label)
instead, so label skew carries over too (labels absent from training fall back to the task's
shares). Each test index goes to exactly one client (largest-remainder rounding), so a small test
pool can leave a client with no test sample of a task it trains on; the task's full test set
weighted by `Partition.counts` is the lower-variance alternative for global scores.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional

import numpy as np

from fedmllm.data.partition.base import Partition, Pool, apportion
from fedmllm.errors import UserError


def _shares(partition: Partition, task: str, train_pool: Optional[Pool]) -> dict[str, list[int]]:
    """label (or '' for the whole task) -> per-client training counts."""
    shares = {"": [len(c[task]) for c in partition.clients]}
    if train_pool is not None:
        per_label: dict[str, list[int]] = defaultdict(lambda: [0] * partition.num_clients)
        for cid, c in enumerate(partition.clients):
            for i in c[task]:
                per_label[train_pool[task][i].label][cid] += 1
        shares.update(per_label)
    return shares


def split_test(partition: Partition, test_pool: Pool, train_pool: Optional[Pool] = None,
               seed: Optional[int] = None) -> Partition:
    """Partition ``test_pool`` with each client's per-task (or per-label) training shares."""
    missing = [t for t in test_pool if t not in partition.tasks]
    if missing:
        raise UserError(f"test pool has tasks the partition does not know: {', '.join(missing)}")
    seed = partition.seed if seed is None else seed
    tasks = [t for t in partition.tasks if t in test_pool]
    clients = [{t: [] for t in tasks} for _ in range(partition.num_clients)]
    for tid, task in enumerate(tasks):
        shares = _shares(partition, task, train_pool)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(test_pool[task]):
            key = s.label if train_pool is not None and sum(shares.get(s.label, [0])) else ""
            groups[key].append(i)
        rng = np.random.default_rng([seed, tid])
        for key in sorted(groups):
            idx = [groups[key][j] for j in rng.permutation(len(groups[key]))]
            start = 0
            for cid, n in enumerate(apportion(len(idx), shares[key])):
                clients[cid][task].extend(idx[start:start + n])
                start += n
    for c in clients:
        for t in c:
            c[t].sort()
    return Partition(partition.partitioner, partition.num_clients, seed, dict(partition.options),
                     tasks, {t: len(test_pool[t]) for t in tasks}, clients, split="test",
                     meta={"by": "label" if train_pool is not None else "task"})
