"""Loading the tasks of an experiment from its `DataConfig` (sources, hub org, sample counts)."""

from __future__ import annotations

import inspect
from typing import Optional, Sequence

from fedmllm.data.record import Sample
from fedmllm.data.registry import TASKS


def load_task(name: str, split: str, n: Optional[int], seed: int, data_cfg=None,
              indices: Optional[Sequence[int]] = None) -> list[Sample]:
    """``n`` samples of task ``name`` / ``split`` honouring ``data.sources`` and ``data.hub_org``.

    ``n = 0`` or ``None`` loads everything (real datasets only; synthetic twins need a count).
    ``indices``: only these samples of the ``n`` (in this order), e.g. one federated client's
    slice; loaders that can (the synthetic twins) build just those, others load all and pick.
    """
    task = TASKS.get(name)
    options = {}
    source = None
    if data_cfg is not None:
        source = data_cfg.sources.get(name)
        if "hub_org" in inspect.signature(task.loader).parameters:
            options["hub_org"] = data_cfg.hub_org
    if indices is not None and "indices" in inspect.signature(task.loader).parameters:
        return task.load(split=split, n=n or None, seed=seed, source=source, indices=list(indices), **options)
    samples = task.load(split=split, n=n or None, seed=seed, source=source, **options)
    return samples if indices is None else [samples[i] for i in indices]


def check_request(name: str, split: str, n: Optional[int], data_cfg=None, key: str = "n") -> None:
    """Check a load of ``n`` samples of ``name`` / ``split`` without loading it: a synthetic twin's
    count, source and options (its loader validates them for an empty selection), a local
    folder's existence. ``key`` names the count in messages (e.g. ``data.train_n``)."""
    from pathlib import Path

    from fedmllm.errors import UserError

    task = TASKS.get(name)
    source = data_cfg.sources.get(name) if data_cfg is not None else None
    if "indices" in inspect.signature(task.loader).parameters:  # the synthetic twins: free to check
        if not n:
            raise UserError(f"{key} = {n} ('all') is not possible for synthetic task {name!r}: give a "
                            f"count, e.g. {key} = 512")
        load_task(name, split, n, 0, data_cfg, indices=[])
    elif source is not None and not Path(source).expanduser().exists():
        from fedmllm.data.real.common import is_local

        if is_local(source):
            raise UserError(f"{name}: source folder {source!r} does not exist: give an existing folder or "
                            "a hub id 'owner/name' in data.sources")


def check_tasks(names: list[str], role: Optional[str] = None) -> None:
    """Fail early (before any compute) on unknown task names or tasks of the wrong role."""
    from fedmllm.errors import UserError

    for name in names:
        task = TASKS.get(name)
        if role is not None and task.role != role and task.role != "extra":
            raise UserError(f"task {name!r} has role {task.role!r}, expected {role!r}; "
                            f"{role} tasks: {', '.join(n for n in TASKS.names() if TASKS.get(n).role == role)}")
