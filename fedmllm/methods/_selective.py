"""Shared behaviour of selective methods: train a subset of the base model's own parameters.

Which subset is a list of module groups (`fedmllm.models.groups`), never name substrings. The
communicated state is those parameters, under their ``model.named_parameters()`` names.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Optional

import torch.nn as nn

from fedmllm.errors import UserError
from fedmllm.methods.base import TuningMethod
from fedmllm.models.groups import groups_for, params_in_group


class SelectiveMethod(TuningMethod):
    """Selective tuning: unfreeze the parameters `select` names, freeze the rest."""

    family = "selective"

    @abstractmethod
    def select(self, model: nn.Module) -> list[str]:
        """Names (``named_parameters``) of the parameters this method trains."""

    def _apply(self, model: nn.Module) -> nn.Module:
        chosen = set(self.select(model))
        if not chosen:
            raise UserError(f"method {self.name!r} selects no parameters of model type "
                            f"{groups_for(model).model_type!r}")
        for n, p in model.named_parameters():
            p.requires_grad_(n in chosen)
        return model

    def state_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        return {n: params[n] for n in self.select(model)}


def groups_params(model: nn.Module, *groups: str, layers: Optional[set[int]] = None) -> list[str]:
    """Parameter names in any of ``groups``, in model order; ``layers`` restricts ``llm_layers``."""
    chosen: set[str] = set()
    for g in groups:
        chosen.update(params_in_group(model, g, layers=layers))
    return [n for n, _ in model.named_parameters() if n in chosen]
