"""LoRA (Hu et al. 2022, via peft): ΔW = (alpha / r) · B A on the targeted linear layers, B = 0 at
init. Paper GPU settings (the authors' sibling code): r=32, alpha=64 on every LLM linear layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn as nn
from peft import LoraConfig

from fedmllm.errors import UserError
from fedmllm.methods._peft import PeftMethod, RankOptions, target_regex
from fedmllm.methods.base import register_method

_A, _B = "lora_A.weight", "lora_B.weight"


@dataclass
class LoraOptions(RankOptions):
    """LoRA options: r, alpha, targets (see `RankOptions`) and dropout on the LoRA input."""

    dropout: float = 0.0

    def validate(self, model=None):
        super().validate(model)
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")


@register_method
class LoRA(PeftMethod):
    """Low-rank adaptation of the LLM's linear layers."""

    name = "lora"
    family = "reparameterization"
    Options = LoraOptions
    use_dora: ClassVar[bool] = False

    def peft_config(self, model: nn.Module) -> LoraConfig:
        o = self.options
        return LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout, use_dora=self.use_dora,
                          target_modules=target_regex(model, o.targets), task_type="CAUSAL_LM")

    def lora_factors(self, state: Mapping[str, torch.Tensor]) -> list[tuple[str, str, float]]:
        """(A key, B key, alpha / r) for every adapted layer; ΔW = scaling · B @ A."""
        scaling = self.options.alpha / self.options.r
        return [(k, k[: -len(_A)] + _B, scaling) for k in state if k.endswith("." + _A)]
