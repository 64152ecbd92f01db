"""A strategy wrapper that measures every round without touching the algorithm.

`Instrumented` delegates configure/aggregate to any Flower strategy and around it: sets the
round's client learning rate (lr × decay^(round−1)) and the run config; tolerates failed clients up
to ``max_failure_fraction``; orders replies by partition id (bit-identical aggregation across
runs); logs per-client loss, examples, seconds and bytes; and computes drift from the clients'
updates before they are averaged.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Iterable, Optional

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmllm.federated import protocol as P
from fedmllm.errors import UserError
from fedmllm.federated.drift import drift_report


class RoundFailed(UserError):
    """Too many clients failed in one round."""


def _to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


class Instrumented(Strategy):
    """Wrap ``inner`` (a Flower strategy) with logging, drift and failure handling."""

    def __init__(self, inner: Strategy, log: Callable[[dict], None], *, system: str, base_lr: float,
                 lr_decay: float, local_steps: int, run_config: str, seed: int,
                 max_failure_fraction: float, lora_factors: Optional[list] = None):
        self.inner = inner
        self.log = log
        self.system = system
        self.base_lr, self.lr_decay, self.local_steps = base_lr, lr_decay, local_steps
        self.run_config, self.seed = run_config, seed
        self.max_failure_fraction = max_failure_fraction
        self.lora_factors = lora_factors or []
        self._global: dict[str, np.ndarray] = {}
        self._t_round = 0.0
        self.history: list[dict] = []

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = _to_numpy(arrays)
        self._t_round = time.perf_counter()
        config[P.LR] = self.base_lr * self.lr_decay ** (server_round - 1)
        config[P.LOCAL_STEPS] = self.local_steps
        config[P.RUN_CONFIG] = self.run_config
        random.seed(self.seed * 1_000_003 + server_round)  # Flower samples nodes with `random`
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        failed = [m for m in replies if m.has_error()]
        for m in failed:
            self.log({"event": "client_failed", "system": self.system, "round": server_round,
                      "node": m.metadata.src_node_id, "error": str(m.error.reason)[:300]})
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
