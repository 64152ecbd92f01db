"""Projector-only tuning: only the vision→language projector trains (LLaVA's stage-1 recipe)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from fedmllm.methods._selective import SelectiveMethod
from fedmllm.methods.base import MethodOptions, register_method
from fedmllm.models.groups import groups_for, params_in_group


@dataclass
class ProjectorOptions(MethodOptions):
    """No options; the model must have a projector module group."""

    def validate(self, model=None):
        if model is not None:
            groups_for(model).pattern("projector")  # UserError naming the groups it has


@register_method
class Projector(SelectiveMethod):
    """The multimodal projector trains."""

    name = "projector"
    Options = ProjectorOptions

    def select(self, model: nn.Module) -> list[str]:
        return params_in_group(model, "projector")
