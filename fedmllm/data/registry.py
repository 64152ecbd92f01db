"""The task registry. Task modules register themselves when imported; the registry imports the
built-in task packages (synthetic twins, real loaders, easy-vqa) the first time it is read."""

from __future__ import annotations

import importlib
import importlib.util

from fedmllm.data.record import Task
from fedmllm.registry import Registry

_BUILTIN = ("fedmllm.data.synth", "fedmllm.data.real", "fedmllm.data.easyvqa")


def _populate() -> None:
    for module in _BUILTIN:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


TASKS: Registry[Task] = Registry("task", populate=_populate)


def register_task(task: Task) -> Task:
    """Register ``task`` under ``task.name`` (a duplicate name raises)."""
    return TASKS.register(task.name, task)
