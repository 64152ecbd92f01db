"""Last-layer tuning (Huang et al. 2025, Sec. 3.1): only the last LLM decoder layer trains."""

from __future__ import annotations

import torch.nn as nn

from fedmllm.methods._selective import SelectiveMethod
from fedmllm.methods.base import register_method
from fedmllm.models.groups import num_llm_layers, params_in_group


@register_method
class LastLayer(SelectiveMethod):
    """The last LLM decoder layer trains (no options)."""

    name = "last_layer"

    def select(self, model: nn.Module) -> list[str]:
        return params_in_group(model, "llm_layers", layers={num_llm_layers(model) - 1})
