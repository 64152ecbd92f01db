"""The `Partition` result, the partitioner registry and the glue to flwr_datasets partitioners.

A pool is ``dict[task_name, list[Sample]]``; a partition assigns every pool index to exactly one
client: ``clients[c][task]`` lists indices into ``pool[task]``. flwr_datasets partitioners work on
a ``datasets.Dataset``; `pool_dataset` wraps the pool as rows (task, task_id, index, label) in a
seeded random order, because IidPartitioner, SizePartitioner and the size-function partitioners
cut *contiguous* shards and would otherwise hand out the pool in its stored order.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from fedmllm.data.record import Sample
from fedmllm.errors import UserError
from fedmllm.registry import Registry

Pool = Mapping[str, Sequence[Sample]]
Clients = list[dict[str, list[int]]]


@dataclass
class Partition:
    """Which pool indices each client holds.

    Attributes:
        partitioner: registry name of the rule that made it.
        num_clients: number of clients (``len(clients)``).
        seed: the seed it was made with (same seed + pool + options -> same partition).
        options: the partitioner options, defaults filled in.
        tasks: task names in pool order.
        pool_sizes: number of samples per task in the pool that was partitioned.
        clients: ``clients[c][task]`` = sorted indices into ``pool[task]`` (every task present).
        split: ``"train"`` or ``"test"`` (see `split_test`).
    """

    partitioner: str
    num_clients: int
    seed: int
    options: dict[str, Any]
    tasks: list[str]
    pool_sizes: dict[str, int]
    clients: Clients
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> list[dict[str, int]]:
        """Per client, the number of samples of each task."""
        return [{t: len(c[t]) for t in self.tasks} for c in self.clients]

    def sizes(self) -> list[int]:
        """Per client, its total number of samples."""
        return [sum(len(v) for v in c.values()) for c in self.clients]

    def samples(self, client: int, pool: Pool) -> list[Sample]:
        """The samples of ``client`` (task by task, in index order)."""
        return [pool[t][i] for t in self.tasks for i in self.clients[client][t]]

    def task_skew(self) -> float:
        """Mean over clients of the total-variation distance between the client's task mix and
        the pool's (0 = every client mirrors the pool, -> 1 = clients hold disjoint tasks)."""
        total = sum(self.pool_sizes.values())
        ref = np.array([self.pool_sizes[t] / total for t in self.tasks])
        dists = []
        for counts, size in zip(self.counts(), self.sizes()):
            if size:
                mix = np.array([counts[t] / size for t in self.tasks])
                dists.append(0.5 * float(np.abs(mix - ref).sum()))
        return float(np.mean(dists)) if dists else 0.0

    def check_exact_cover(self) -> None:
        """Raise ValueError unless every pool index is held by exactly one client."""
        for t in self.tasks:
            held = sorted(i for c in self.clients for i in c[t])
            if held != list(range(self.pool_sizes[t])):
                raise ValueError(f"partition of task {t!r} is not an exact cover of its pool")

    def counts_table(self, extra: Mapping[str, Sequence[Any]] | None = None) -> str:
        """A printable client x task table of sample counts with totals; ``extra`` adds a column
        per entry (name -> one value per client, e.g. each client's LoRA rank and budget)."""
        extra = dict(extra or {})
        names = [*self.tasks, "total", *extra]
        rows = [[str(c), *(str(n[t]) for t in self.tasks), str(s), *(str(v[c]) for v in extra.values())]
                for c, (n, s) in enumerate(zip(self.counts(), self.sizes()))]
        rows.append(["total", *(str(sum(len(c[t]) for c in self.clients)) for t in self.tasks),
                     str(sum(self.sizes())), *("" for _ in extra)])
        header = ["client", *names]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        fmt = lambda r: "  ".join(x.rjust(w) for x, w in zip(r, widths))  # noqa: E731
        title = f"{self.partitioner} ({self.split}, seed {self.seed}, {self.options})"
        return "\n".join([title, fmt(header), *(fmt(r) for r in rows)])

    def to_json(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict (indices included), plus ``counts`` for readers."""
        return {**asdict(self), "counts": self.counts()}

    @classmethod
    def from_json(cls, data: "dict[str, Any] | str") -> "Partition":
        """Inverse of `to_json` (also accepts its ``json.dumps`` text)."""
        data = json.loads(data) if isinstance(data, str) else dict(data)
        data.pop("counts", None)
        return cls(**data)


# fn(pool, tasks, num_clients, seed, **options) -> clients. Options arrive validated and filled.
PartitionFn = Callable[..., Clients]


@dataclass(frozen=True)
class PartitionerSpec:
    """A registered partitioning rule: its function, its options (name -> default) and a note."""

    name: str
    fn: PartitionFn
    options: dict[str, Any]
    description: str = ""


PARTITIONERS: Registry[PartitionerSpec] = Registry("partitioner")


def register_partitioner(spec: PartitionerSpec) -> PartitionerSpec:
    """Register ``spec`` under ``spec.name`` (a duplicate name raises)."""
    return PARTITIONERS.register(spec.name, spec)


def pool_dataset(pool: Pool, seed: int, label_map: Callable[[str, str], str] | None = None):
    """The pool as a ``datasets.Dataset`` of rows (task, task_id, index, label), rows permuted
    by ``seed``. ``label_map(task, label)`` may coarsen labels (see label_dirichlet)."""
    import datasets  # heavy import, needed only when partitioning

    rows: dict[str, list] = {"task": [], "task_id": [], "index": [], "label": []}
    for tid, (task, samples) in enumerate(pool.items()):
        for i, s in enumerate(samples):
            rows["task"].append(task)
            rows["task_id"].append(tid)
            rows["index"].append(i)
            rows["label"].append(label_map(task, s.label) if label_map else s.label)
    order = np.random.default_rng(seed).permutation(len(rows["task"]))
    return datasets.Dataset.from_dict({k: [v[i] for i in order] for k, v in rows.items()})


def collect(partitioner: Any, dataset: Any, num_clients: int, tasks: Sequence[str],
            offset: int = 0, clients: Clients | None = None) -> Clients:
    """Run a flwr_datasets partitioner on ``dataset`` and gather (task, index) per partition.

    Partition ``pid`` goes to client ``offset + pid`` of ``clients`` (created if None).
    """
    if clients is None:
        clients = [{t: [] for t in tasks} for _ in range(num_clients)]
    partitioner.dataset = dataset
    for pid in range(partitioner.num_partitions):
        part = partitioner.load_partition(pid)
        for task, index in zip(part["task"], part["index"]):
            clients[offset + pid][task].append(int(index))
    for c in clients:
        for t in c:
            c[t].sort()
    return clients


@contextmanager
def flwr_errors(name: str, advice: str) -> Iterator[None]:
    """Turn flwr_datasets' ValueErrors into one-line UserErrors with ``advice``; silence its
    retry warnings (the retry outcome is what matters, and it raises if it fails)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except ValueError as e:
            raise UserError(f"partitioner {name!r} failed: {e} {advice}") from e


def apportion(total: int, shares: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``shares`` (largest remainder; ties go to
    the lower index). All-zero shares split evenly."""
    s = np.asarray(shares, dtype=np.float64)
    if s.sum() <= 0:
        s = np.ones_like(s)
    exact = total * s / s.sum()
    base = np.floor(exact).astype(int)
    order = sorted(range(len(s)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in order[: total - int(base.sum())]:
        base[i] += 1
    return base.tolist()


def check_min_size(name: str, clients: Clients, min_size: int, advice: str) -> None:
    """UserError if a client holds fewer than ``min_size`` samples."""
    sizes = [sum(len(v) for v in c.values()) for c in clients]
    if min(sizes) < min_size:
        raise UserError(f"partitioner {name!r}: client {int(np.argmin(sizes))} got "
                        f"{min(sizes)} samples (< min_size={min_size}). {advice}")
