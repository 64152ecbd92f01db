"""Every registry's names in one place (``fedmllm list``)."""

from __future__ import annotations


def catalog() -> dict[str, list[str]]:
    from fedmllm.collab.base import PARADIGMS
    from fedmllm.data.partition import PARTITIONERS
    from fedmllm.data.registry import TASKS
    from fedmllm.federated.algorithms import ALGORITHMS
    from fedmllm.federated.baselines import BASELINES
    from fedmllm.methods import METHODS
    from fedmllm.metrics import METRICS
    from fedmllm.models import MODELS

    out = {"models": MODELS.names(), "tasks": TASKS.names(), "metrics": METRICS.names(),
           "methods": METHODS.names(), "partitioners": PARTITIONERS.names(),
           "strategies": ALGORITHMS.names(), "baselines": BASELINES.names(),
           "collaboration": PARADIGMS.names()}
    return out
