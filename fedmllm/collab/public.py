"""The server's public set: the only data the server sees in a collaboration run.

By default a held-out split of the upstream twins: per task, the `collab.public_n` training
samples from index `collab.public_offset` (3000: beyond the embedded bases' pretraining pool).
A downstream task in the public set must start at or beyond ``data.train_n``, the clients' pool,
so no client's sample is ever public (`check_public`)."""

from __future__ import annotations

import functools

from fedmllm.config import Config, dumps
from fedmllm.errors import UserError


def public_tasks(cfg: Config) -> list[str]:
    return list(cfg.collab.public_tasks or cfg.data.upstream)


def check_public(cfg: Config) -> None:
    """Unknown tasks, sizes the source cannot give and overlap with client data: one-line errors."""
    from fedmllm.data.registry import TASKS
    from fedmllm.data.suite import check_request

    c = cfg.collab
    for task in public_tasks(cfg):
        TASKS.get(task)
        if task in cfg.data.downstream and c.public_offset < cfg.data.train_n:
            raise UserError(f"collab.public_tasks: the public split of {task!r} (indices {c.public_offset}.."
                            f"{c.public_offset + c.public_n - 1}) overlaps the clients' data (indices 0.."
                            f"{cfg.data.train_n - 1}); set collab.public_offset >= data.train_n = {cfg.data.train_n}")
        check_request(task, "train", c.public_offset + c.public_n, cfg.data, "collab.public_offset + collab.public_n")


@functools.lru_cache(maxsize=4)
def _public(cfg_toml: str) -> tuple:
    from fedmllm.config import config_from_toml
    from fedmllm.data.suite import load_task

    cfg = config_from_toml(cfg_toml)
    c = cfg.collab
    out = []
    for task in public_tasks(cfg):
        out += load_task(task, "train", c.public_offset + c.public_n, cfg.seed, cfg.data,
                         indices=range(c.public_offset, c.public_offset + c.public_n))
    return tuple(out)


def public_samples(cfg: Config) -> list:
    """The public set, task by task in index order (the same on the server and every client)."""
    return list(_public(dumps(cfg)))
