"""Bottleneck adapter (Houlsby et al. 2019; placement after the FFN as in Pfeiffer et al. 2021).

peft has no bottleneck adapter, so this is our own: every LLM decoder layer's MLP output y becomes
y + up(gelu(down(y))), added by a forward hook so base parameter names stay unchanged. ``up`` is
zero-initialised, so the model is unchanged at init. The state is the adapters' parameters under
their ``named_parameters`` names (``...layers.N.mlp.fedmllm_adapter.{down,up}.{weight,bias}``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from fedmllm.errors import UserError
from fedmllm.methods.base import MethodOptions, TuningMethod, register_method
from fedmllm.models.groups import groups_for, strip_peft_prefix

ATTR = "fedmllm_adapter"


class Bottleneck(nn.Module):
    """x ↦ x + up(gelu(down(x))) with ``up`` zero-initialised."""

    def __init__(self, dim: int, bottleneck: int, like: torch.Tensor):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, device=like.device, dtype=like.dtype)
        self.up = nn.Linear(bottleneck, dim, device=like.device, dtype=like.dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(nn.functional.gelu(self.down(x)))


def _add_adapter(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return getattr(module, ATTR)(output)


@dataclass
class AdapterOptions(MethodOptions):
    """bottleneck: the adapter's hidden width."""

    bottleneck: int = 16

    def validate(self, model=None):
        if self.bottleneck < 1:
            raise UserError(f"adapter: bottleneck must be >= 1, got {self.bottleneck}")
        if model is not None:
            groups_for(model)


def decoder_mlps(model: nn.Module) -> dict[str, nn.Module]:
    """``<decoder layer name>.mlp`` → module, for every LLM decoder layer (module-group table)."""
    layer_re = re.compile(groups_for(model).llm_layers)
    out: dict[str, nn.Module] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        # Parents come before children, so the first module whose name extends to a match of the
        # layer pattern (``...layers.N.``) is decoder layer N itself.
        m = layer_re.fullmatch(strip_peft_prefix(name) + ".")
        if m and int(m.group(1)) not in seen:
            seen.add(int(m.group(1)))
            if not isinstance(getattr(module, "mlp", None), nn.Module):
                raise UserError(f"adapter: decoder layer {name!r} has no .mlp module")
            out[f"{name}.mlp"] = module.mlp
    return out


@register_method
class Adapter(TuningMethod):
    """Bottleneck adapters after every LLM decoder layer's MLP."""

    name = "adapter"
    family = "additive"
    Options = AdapterOptions

    def _apply(self, model: nn.Module) -> nn.Module:
        mlps = decoder_mlps(model)
        if not mlps:
            raise UserError(f"adapter: model type {groups_for(model).model_type!r} has no LLM decoder layers")
        dim = model.config.get_text_config().hidden_size
        model.requires_grad_(False)
        for mlp in mlps.values():
            like = next(mlp.parameters())
            mlp.add_module(ATTR, Bottleneck(dim, self.options.bottleneck, like))
            mlp.register_forward_hook(_add_adapter)
        return model

    def state_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {f"{mlp_name}.{ATTR}.{n}": p for mlp_name, mlp in decoder_mlps(model).items()
                for n, p in getattr(mlp, ATTR).named_parameters()}
