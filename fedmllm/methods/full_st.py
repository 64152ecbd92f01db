"""Full-ST (Huang et al. 2025, Sec. 3.1): all LLM decoder layers, the LLM's final norm and the
projector train; the vision tower, token embeddings and lm_head stay frozen."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from fedmllm.methods._selective import SelectiveMethod, groups_params
from fedmllm.methods.base import MethodOptions, register_method
from fedmllm.models.groups import groups_for

_GROUPS = ("llm_layers", "llm_norm", "projector")


@dataclass
class FullSTOptions(MethodOptions):
    """No options; the model must have every group Full-ST trains."""

    def validate(self, model=None):
        if model is not None:
            for g in _GROUPS:
                groups_for(model).pattern(g)  # UserError if the model type lacks the group


@register_method
class FullST(SelectiveMethod):
    """Full selective tuning of the LLM and the projector."""

    name = "full_st"
    Options = FullSTOptions

    def select(self, model: nn.Module) -> list[str]:
        return groups_params(model, *_GROUPS)
