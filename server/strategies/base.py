"""What every registered strategy shares: reply checks, deterministic order, observers, metrics.

`ValidatedReplies` is a mixin placed before a Flower Message-API strategy class
(``class FedAvg(ValidatedReplies, flwr FedAvg)``). It overrides only ``configure_train`` (to
remember the keys and shapes it sent) and ``aggregate_train`` / ``aggregate_evaluate`` (to prepare
the replies before Flower aggregates them):

1. drop error replies and replies whose metrics say ``client-failed`` (counted, logged);
2. sort by ``partition-id`` (then node id): float sums then run in one fixed order, which makes a
   Ray simulation bit-identical to a sequential loop (FIELD_NOTES, Flower 1.41);
3. check every reply's arrays against the keys/shapes sent (`fedmllm.federated.protocol`);
4. hand the prepared replies to an observer (per-client metrics, drift measures) before Flower's
   FedMedian / FedTrimmedAvg consume the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from logging import WARNING
from typing import Any, Callable, Iterable, Optional

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedmllm.federated import protocol as P
from fedmllm.federated.protocol import ReplyError, reduce_metrics, validate_reply


def record_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> name -> numpy array (deserialized copies)."""
    return {k: a.numpy() for k, a in record.items()}


def numpy_to_record(state: dict[str, Any]) -> ArrayRecord:
    """name -> numpy array -> ArrayRecord (keys kept in order)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def reply_metrics(content: RecordDict) -> dict[str, Any]:
    """The (first) MetricRecord of a reply as a plain dict; {} if there is none."""
    records = list(content.metric_records.values())
    return dict(records[0]) if records else {}


def aggregate_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Train/evaluate metric aggregation: `protocol.reduce_metrics` over the replies' metrics
    (bytes and example counts summed, seconds max, partition id dropped, the rest weighted)."""
    metrics = [reply_metrics(r) for r in records]
    weights = [float(m.get(weighted_by_key, 0.0)) for m in metrics]
    return MetricRecord(reduce_metrics(metrics, weights))


@dataclass
class ClientReply:
    """One client's reply, as an observer sees it (numpy arrays, plain metrics)."""

    node_id: int
    partition_id: Optional[int]
    metrics: dict[str, Any]
    arrays: dict[str, np.ndarray]
    failed: bool


# train_observer(server_round, global_before, replies); evaluate_observer(server_round, replies)
TrainObserver = Callable[[int, dict[str, np.ndarray], list[ClientReply]], None]
EvaluateObserver = Callable[[int, list[ClientReply]], None]


def _failed(msg: Message) -> bool:
    return bool(reply_metrics(msg.content).get(P.CLIENT_FAILED, 0))


def _order(msg: Message) -> tuple[float, int]:
    pid = reply_metrics(msg.content).get(P.PARTITION_ID)
    return (float("inf") if pid is None else float(pid), int(msg.metadata.src_node_id))


class ValidatedReplies:
    """Mixin for Flower strategies: checked, ordered, observed replies (see module doc)."""

    def __init__(self, *args: Any, train_observer: Optional[TrainObserver] = None,
                 evaluate_observer: Optional[EvaluateObserver] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_observer = train_observer
        self.evaluate_observer = evaluate_observer
        self.expected_shapes: Optional[dict[str, tuple[int, ...]]] = None
        self.global_before: Optional[dict[str, np.ndarray]] = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Remember what was sent, then configure as the Flower strategy does."""
        self.expected_shapes = {k: tuple(a.shape) for k, a in arrays.items()}
        self.global_before = record_to_numpy(arrays) if self.train_observer else None
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]

    def prepare_replies(self, replies: Iterable[Message], train: bool
                        ) -> tuple[list[Message], list[Message]]:
        """(usable replies in partition order, client-failed replies); error replies dropped."""
        replies = [m for m in replies if not m.has_error()]
        ok = sorted((m for m in replies if not _failed(m)), key=_order)
        failed = sorted((m for m in replies if _failed(m)), key=_order)
        for msg in failed:
            log(WARNING, "reply from node %s reports %s; left out", msg.metadata.src_node_id,
                P.CLIENT_FAILED)
        for msg in ok:
            who = f"reply from node {msg.metadata.src_node_id}"
            weight_key = self.weighted_by_key  # type: ignore[attr-defined]
            if weight_key not in reply_metrics(msg.content):
                raise ReplyError(f"{who} has no metric {weight_key!r}")
            if train and self.expected_shapes is not None:
                validate_reply(self._reply_arrays(msg, who), self.expected_shapes, who=who)
        return ok, failed

    def _reply_arrays(self, msg: Message, who: str) -> ArrayRecord:
        key = self.arrayrecord_key  # type: ignore[attr-defined]
        if key not in msg.content.array_records:
            raise ReplyError(f"{who} has no ArrayRecord {key!r}")
        return msg.content.array_records[key]

    def _observe(self, train: bool, server_round: int, ok: list[Message],
                 failed: list[Message]) -> None:
        observer = self.train_observer if train else self.evaluate_observer
        if observer is None:
            return
        key = self.arrayrecord_key  # type: ignore[attr-defined]
        failed_ids = {id(m) for m in failed}
        views = [ClientReply(int(m.metadata.src_node_id),
                             reply_metrics(m.content).get(P.PARTITION_ID),
                             reply_metrics(m.content),
                             record_to_numpy(m.content.array_records[key])
                             if train and key in m.content.array_records else {},
                             id(m) in failed_ids)
                 for m in [*ok, *failed]]
        if train:
            observer(server_round, self.global_before or {}, views)  # type: ignore[call-arg]
        else:
            observer(server_round, views)  # type: ignore[call-arg]

    @staticmethod
    def annotate(metrics: Optional[MetricRecord], ok: int, failed: int) -> Optional[MetricRecord]:
        """Add the number of aggregated and of failed clients to the aggregated metrics."""
        if metrics is None and not failed:
            return None
        metrics = MetricRecord() if metrics is None else metrics
        metrics[P.NUM_CLIENTS] = ok
        metrics[P.CLIENT_FAILED] = failed
        return metrics

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        """Prepare the replies, observe them, then aggregate as the Flower strategy does."""
        ok, failed = self.prepare_replies(replies, train=True)
        self._observe(True, server_round, ok, failed)
        arrays, metrics = super().aggregate_train(server_round, ok)  # type: ignore[misc]
        return arrays, self.annotate(metrics, len(ok), len(failed))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> Optional[MetricRecord]:
        """Prepare and observe evaluate replies, then aggregate their metrics."""
        ok, failed = self.prepare_replies(replies, train=False)
        self._observe(False, server_round, ok, failed)
        metrics = super().aggregate_evaluate(server_round, ok)  # type: ignore[misc]
        return self.annotate(metrics, len(ok), len(failed))
