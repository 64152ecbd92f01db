"""LoHa (Hyeon-Woo et al. 2022, FedPara; via peft): ΔW = (W1a W1b) ⊙ (W2a W2b) · alpha / r."""

from __future__ import annotations

import torch.nn as nn
from peft import LoHaConfig

from fedmllm.methods._peft import PeftMethod, RankOptions, target_regex
from fedmllm.methods.base import register_method


@register_method
class LoHa(PeftMethod):
    """Low-rank Hadamard-product adaptation of the LLM's linear layers."""

    name = "loha"
    family = "reparameterization"
    Options = RankOptions

    def peft_config(self, model: nn.Module) -> LoHaConfig:
        o = self.options
        return LoHaConfig(r=o.r, alpha=o.alpha, target_modules=target_regex(model, o.targets),
                          task_type="CAUSAL_LM")
