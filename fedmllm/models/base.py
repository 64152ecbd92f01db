"""The model registry's types: what a registered model is (`ModelSpec`) and what building one gives
(`ModelBundle`). Built-in entries live one per file (``tiny_llava_ov.py``, ``tiny_vila.py``);
`fedmllm.models.registry` imports them and builds models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transformers import PreTrainedModel, ProcessorMixin

from fedmllm.models.groups import ModuleGroups
from fedmllm.registry import Registry

# fresh(seed) -> (randomly initialised model, processor with a freshly trained tokenizer)
FreshBuilder = Callable[[int], "tuple[PreTrainedModel, ProcessorMixin]"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it from scratch. Its pretrained weights are the shipped
    checkpoint ``fedmllm/assets/checkpoints/<name>/`` (written by ``fedmllm pretrain``)."""

    name: str
    fresh: FreshBuilder
    description: str = ""


@dataclass
class ModelBundle:
    """A built model with everything that goes with it.

    Attributes:
        model: the transformers model (``...ForConditionalGeneration``), on its device and dtype.
        processor: the multimodal processor (image processor + tokenizer + chat template).
        name: the registered name, or the hub id / directory it was loaded from.
        model_type: ``model.config.model_type`` (the key of its `ModuleGroups` row).
        groups: the module-group table tuning methods select parameters with.
    """

    model: PreTrainedModel
    processor: ProcessorMixin
    name: str
    model_type: str
    groups: ModuleGroups


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Register ``spec`` under ``spec.name`` (a duplicate name raises)."""
    return MODELS.register(spec.name, spec)
