"""Top-layer tuning (Huang et al. 2025, Sec. 3.1): the top ``k`` LLM decoder layers + projector."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from fedmllm.errors import UserError
from fedmllm.methods._selective import SelectiveMethod, groups_params
from fedmllm.methods.base import MethodOptions, register_method
from fedmllm.models.groups import groups_for, num_llm_layers


@dataclass
class TopLayersOptions(MethodOptions):
    """k: how many of the top (last) LLM decoder layers train, together with the projector."""

    k: int = 2

    def validate(self, model=None):
        if self.k < 1:
            raise UserError(f"top_layers: k must be >= 1, got {self.k}")
        if model is not None:
            n = num_llm_layers(model)
            if self.k > n:
                raise UserError(f"top_layers: k={self.k} exceeds the model's {n} LLM layers")
            groups_for(model).pattern("projector")


@register_method
class TopLayers(SelectiveMethod):
    """The top ``k`` LLM layers and the projector train."""

    name = "top_layers"
    Options = TopLayersOptions

    def select(self, model: nn.Module) -> list[str]:
        n = num_llm_layers(model)
        top = set(range(n - self.options.k, n))
        return groups_params(model, "llm_layers", "projector", layers=top)
