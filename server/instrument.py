"""A strategy wrapper that measures every round without touching the algorithm.

`Instrumented` delegates configure/aggregate to any Flower strategy and around it: sets the
round's client learning rate (lr × decay^(round−1)) and the run config; makes client sampling
reproducible (seeded, over nodes listed in partition order); tolerates failed clients up to
``max_failure_fraction``; orders replies by partition id (bit-identical aggregation across runs);
logs per-client loss, examples, seconds and bytes; and computes drift from the clients' updates
before they are averaged.
"""

from __future__ import annotations

import random
import re
import time
from typing import Callable, Iterable, Optional

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmllm.federated import protocol as P
from fedmllm.errors import UserError
from fedmllm.federated.drift import drift_report
from fedmllm.federated.runtime import sampling_seed


class RoundFailed(UserError):
    """Too many clients failed in one round."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit): \S.*")


def error_summary(reason: str, limit: int = 300) -> str:
    """The root cause line (``RuntimeError: ...``) of a client error reply's reason.

    Under Ray the reason is a whole remote traceback (colour codes, Flower's
    ``ClientAppException`` wrapper around the app's exception); its first 300 characters named
    neither the exception nor its message. Falls back to the reason's start, whitespace folded.
    """
    text = _ANSI.sub("", reason or "")
    for line in text.splitlines():
        line = line.strip()
        if _EXCEPTION_LINE.fullmatch(line) and "ClientAppException" not in line.split(":")[0]:
            return line[:limit]
    return " ".join(text.split())[:limit]


def partition_ids(grid: Grid, nodes: Iterable[int], timeout: float = 3600.0) -> dict[int, int]:
    """node id -> partition id, asked with one ``query`` message per node (the ClientApp answers
    from its ``node_config`` without building anything). Nodes that do not answer are left out."""
    messages = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    return {m.metadata.src_node_id: int(m.content[P.METRICS][P.PARTITION_ID])
            for m in grid.send_and_receive(messages, timeout=timeout) if not m.has_error()}


class PartitionOrderedGrid:
    """``grid`` whose ``get_node_ids`` lists nodes by partition id (unknown nodes last).

    Flower samples ``random.sample(list(grid.get_node_ids()), k)``; node ids are random 64-bit
    numbers drawn anew by every simulation and listed as a set, so the same seed picked different
    partitions in every run. Over this ordering the seed alone decides which partitions train.
    """

    def __init__(self, grid: Grid, partitions: dict[int, int]):
        self._grid, self._partitions = grid, partitions

    def get_node_ids(self) -> list[int]:
        """Connected nodes, in partition-id order."""
        return sorted(self._grid.get_node_ids(), key=lambda n: (self._partitions.get(n, float("inf")), n))

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


def _to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


class Instrumented(Strategy):
    """Wrap ``inner`` (a Flower strategy) with logging, drift and failure handling."""

    def __init__(self, inner: Strategy, log: Callable[[dict], None], *, system: str, base_lr: float,
                 lr_decay: float, local_steps: int, run_config: str, seed: int,
                 max_failure_fraction: float, lora_factors: Optional[list] = None,
                 partitions: Optional[dict[int, int]] = None):
        """``partitions``: a node id -> partition id cache to fill and share between strategies
        (asked from the clients once, only when a round samples a subset of the nodes)."""
        self.inner = inner
        self.log = log
        self.system = system
        self.base_lr, self.lr_decay, self.local_steps = base_lr, lr_decay, local_steps
        self.run_config, self.seed = run_config, seed
        self.max_failure_fraction = max_failure_fraction
        self.lora_factors = lora_factors or []
        self.partitions = {} if partitions is None else partitions
        self._global: dict[str, np.ndarray] = {}
        self._t_round = 0.0
        self.history: list[dict] = []

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        grid = self._sampling_grid(grid)
        self._global = _to_numpy(arrays)
        self._t_round = time.perf_counter()
        config[P.LR] = self.base_lr * self.lr_decay ** (server_round - 1)
        config[P.LOCAL_STEPS] = self.local_steps
        config[P.RUN_CONFIG] = self.run_config
        random.seed(sampling_seed(self.seed, server_round))  # Flower samples nodes with `random`
        return self.inner.configure_train(server_round, arrays, config, grid)

    def _sampling_grid(self, grid: Grid) -> Grid:
        """``grid`` as the inner strategy should sample from it: in partition order when it
        samples a subset (the node -> partition map is asked once, logged with its cost)."""
        if getattr(self.inner, "fraction_train", 1.0) >= 1.0:
            return grid
        unknown = [n for n in grid.get_node_ids() if n not in self.partitions]
        if unknown:
            t0 = time.perf_counter()
            self.partitions.update(partition_ids(grid, unknown))
            self.log({"event": "node_partitions", "system": self.system, "asked": len(unknown),
                      "known": len(self.partitions), "seconds": time.perf_counter() - t0})
        return PartitionOrderedGrid(grid, self.partitions)  # type: ignore[return-value]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        failed = [m for m in replies if m.has_error()]
        for m in failed:
            self.log({"event": "client_failed", "system": self.system, "round": server_round,
                      "node": m.metadata.src_node_id, "error": error_summary(str(m.error.reason))})
        if replies and len(failed) / len(replies) > self.max_failure_fraction:
            raise RoundFailed(f"round {server_round}: {len(failed)} of {len(replies)} clients failed "
                              f"(more than federated.max_failure_fraction = {self.max_failure_fraction})")
        ok.sort(key=lambda m: int(m.content[P.METRICS][P.PARTITION_ID]))
        self._log_clients(server_round, ok)
        drift = self._drift(ok)
        agg_arrays, agg_metrics = self.inner.aggregate_train(server_round, ok)
        bytes_in = sum(int(m.content[P.METRICS][P.BYTES_IN]) for m in ok)
        bytes_out = sum(int(m.content[P.METRICS][P.BYTES_OUT]) for m in ok)
        event = {"event": "round", "system": self.system, "round": server_round, "clients": len(ok),
                 "failed": len(failed), "seconds": time.perf_counter() - self._t_round,
                 "end_time": time.time(),  # epoch s: round-to-round wall time, evaluation included
                 "bytes_down": bytes_in, "bytes_up": bytes_out, "drift": drift}
        self.history.append(event)
        self.log(event)
        return agg_arrays, agg_metrics

    def _log_clients(self, server_round: int, replies: list[Message]) -> None:
        for m in replies:
            met = m.content[P.METRICS]
            self.log({"event": "client_train", "system": self.system, "round": server_round,
                      "client": int(met[P.PARTITION_ID]), "train_loss": float(met[P.TRAIN_LOSS]),
                      "examples": int(met[P.NUM_EXAMPLES]), "seconds": float(met[P.SECONDS]),
                      "bytes_in": int(met[P.BYTES_IN]), "bytes_out": int(met[P.BYTES_OUT])})

    def _drift(self, replies: list[Message]) -> dict:
        if not replies or not self._global:
            return {}
        states = [_to_numpy(m.content[P.ARRAYS]) for m in replies]
        weights = [float(m.content[P.METRICS][P.NUM_EXAMPLES]) for m in replies]
        report = drift_report(self._global, states, weights, self.lora_factors)
        report["clients"] = [int(m.content[P.METRICS][P.PARTITION_ID]) for m in replies]
        return report

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []  # the global model is evaluated server-side (evaluate_fn), not on clients

    def aggregate_evaluate(self, server_round, replies):
        return None
