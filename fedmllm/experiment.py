"""Pieces shared by the centralized benchmark, the federated simulation and the demo.

The data of one experiment (training pools, downstream test sets, upstream sets), seed derivation,
scoring a model on them, and the pre-compute validation of models and methods.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Optional

import torch.nn as nn

from fedmllm.config import Config, method_options
from fedmllm.data.record import Sample
from fedmllm.data.suite import check_request, check_tasks, load_task
from fedmllm.errors import UserError

TEST_SEED_OFFSET = 1  # test sets are drawn with seed + 1 so they never overlap training draws


def use_threads(cfg: Config) -> int:
    """Set this process's torch intra-op threads, and numpy's BLAS threads, from ``cfg.threads``
    (0: leave the libraries' defaults); returns the number of torch threads in use."""
    import os

    import torch

    if cfg.threads < 0 or cfg.threads > (os.cpu_count() or 1) * 4:
        from fedmllm.errors import UserError

        raise UserError(f"config key 'threads' must be in 0..{(os.cpu_count() or 1) * 4}, got {cfg.threads}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        from threadpoolctl import threadpool_limits

        # numpy's OpenBLAS starts a thread per core as well: on shared cores a small call then
        # waits milliseconds for its threads (a 128 x 256 norm took 4 ms instead of 60 us), and
        # the server's per-round drift and LoRA aggregation-error measures make hundreds.
        threadpool_limits(cfg.threads, user_api="blas")
    return torch.get_num_threads()


def derive_seed(base: int, *parts: object) -> int:
    """A stable 31-bit seed from the base seed and any labels (run, client, round, ...)."""
    digest = hashlib.sha256(repr((base,) + parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class ExperimentData:
    """Training pools and test sets of one experiment, loaded once."""

    train: dict[str, list[Sample]] = field(default_factory=dict)
    test: dict[str, list[Sample]] = field(default_factory=dict)
    upstream: dict[str, list[Sample]] = field(default_factory=dict)

    @classmethod
    def load(cls, cfg: Config, upstream_n: Optional[int] = None,
             parts: tuple[str, ...] = ("train", "test", "upstream")) -> "ExperimentData":
        """Load the requested parts: downstream ``train`` pools, downstream ``test`` sets and the
        ``upstream`` evaluation sets (test sets use seed + 1)."""
        d = cfg.data
        test_seed = cfg.seed + TEST_SEED_OFFSET
        return cls(
            train={t: load_task(t, "train", d.train_n, cfg.seed, d) for t in d.downstream} if "train" in parts else {},
            test={t: load_task(t, "test", d.test_n, test_seed, d) for t in d.downstream} if "test" in parts else {},
            upstream={t: load_task(t, "test", upstream_n or d.upstream_n, test_seed, d) for t in d.upstream}
            if "upstream" in parts else {},
        )


def check_data(cfg: Config) -> None:
    """Unknown task names or roles, sources and sample counts that cannot load fail before any
    compute (and before the run directory exists)."""
    d = cfg.data
    if not d.downstream:
        raise UserError("data.downstream is empty: name at least one downstream task")
    check_tasks(d.downstream, "downstream")
    check_tasks(d.upstream, "upstream")
    check_tasks(list(d.sources))
    for name, source in d.sources.items():
        if not isinstance(source, str) or not source:
            raise UserError(f"data.sources.{name} must be a hub id or a folder path (a string), got {source!r}")
    for name in d.downstream:
        check_request(name, "train", d.train_n, d, "data.train_n")
        check_request(name, "test", d.test_n, d, "data.test_n")
    for name in d.upstream:
        check_request(name, "test", d.upstream_n, d, "data.upstream_n")


def check_methods(model: nn.Module, cfg: Config, methods: list[str]) -> None:
    """Every method exists and its options fit the model (e.g. top_layers k ≤ layers), checked
    on a throwaway copy before any compute."""
    from fedmllm.methods import METHODS, apply_method
    from fedmllm.methods.base import base_method

    for name in cfg.methods:  # a misspelt [methods.<name>] table would be ignored
        if base_method(name) not in METHODS:
            raise UserError(f"[methods.{name}]: {METHODS.unknown_message(base_method(name))}")
    for name in methods:
        options, _ = method_options(cfg, name)
        apply_method(copy.deepcopy(model), name, options)


def fresh_copy(bundle) -> nn.Module:
    """A trainable copy of the base model (deep copy; the base stays untouched)."""
    return copy.deepcopy(bundle.model)


def score(model: nn.Module, processor, sets: dict[str, list[Sample]], batch_size: int) -> dict[str, float]:
    """Score ``model`` on several task sets; returns task → score (percent)."""
    from fedmllm.eval import evaluate

    if not sets:
        return {}
    return {t: float(s.score) for t, s in evaluate(model, processor, sets, batch_size=batch_size).items()}
