"""The wire format of fedmllm's messages: `Payload` / replies <-> Flower ``RecordDict``.

Used by both apps (``server/`` sends payloads, ``clients/`` decodes them and encodes replies).
Named states travel as one ``ArrayRecord`` each (under their group name), config values in the
``config`` ConfigRecord, reply metrics in the ``metrics`` MetricRecord (keys in
`fedmllm.federated.protocol`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmllm.federated import protocol as P
from fedmllm.federated.aggregate import contiguous
from fedmllm.federated.algorithms import Payload
from fedmllm.federated.algorithms.base import Groups


def numpy_to_record(state: Mapping[str, Any]) -> ArrayRecord:
    """name -> array -> ArrayRecord, keys in order, shapes exactly kept (0-d stays 0-d:
    ``np.ascontiguousarray`` would make it shape (1,))."""
    return ArrayRecord({k: Array(contiguous(v)) for k, v in state.items()})


def record_to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> name -> numpy array (deserialized copies)."""
    return {k: a.numpy() for k, a in record.items()}


def encode_groups(groups: Groups, content: RecordDict | None = None) -> RecordDict:
    """Each named state as an ArrayRecord of a (new) RecordDict."""
    content = RecordDict() if content is None else content
    for name, arrays in groups.items():
        content[name] = numpy_to_record(arrays)
    return content


def decode_groups(content: RecordDict) -> Groups:
    """Every ArrayRecord of ``content`` as a named state."""
    return {name: record_to_numpy(rec) for name, rec in content.array_records.items()}


def encode_payload(payload: Payload) -> RecordDict:
    content = encode_groups(payload.arrays)
    content[P.CONFIG] = ConfigRecord(dict(payload.config))
    return content


def decode_payload(content: RecordDict) -> Payload:
    return Payload(decode_groups(content), dict(content[P.CONFIG]) if P.CONFIG in content else {})


def encode_reply(arrays: Groups, metrics: Mapping[str, Any]) -> RecordDict:
    content = encode_groups(arrays)
    content[P.METRICS] = MetricRecord(dict(metrics))
    return content


def decode_metrics(content: RecordDict) -> dict[str, Any]:
    """The (first) MetricRecord of a reply as a plain dict; {} if there is none."""
    records = list(content.metric_records.values())
    return dict(records[0]) if records else {}


def array_bytes(content: RecordDict) -> int:
    """Bytes of all arrays in ``content`` (what the round's communication accounting counts)."""
    return sum(r.count_bytes() for r in content.array_records.values())
