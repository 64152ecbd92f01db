"""LoKr (Yeh et al. 2024, LyCORIS; via peft): ΔW = W1 ⊗ (W2a W2b), a Kronecker-product update."""

from __future__ import annotations

import torch.nn as nn
from peft import LoKrConfig

from fedmllm.methods._peft import PeftMethod, RankOptions, target_regex
from fedmllm.methods.base import register_method


@register_method
class LoKr(PeftMethod):
    """Low-rank Kronecker-product adaptation of the LLM's linear layers."""

    name = "lokr"
    family = "reparameterization"
    Options = RankOptions

    def peft_config(self, model: nn.Module) -> LoKrConfig:
        o = self.options
        return LoKrConfig(r=o.r, alpha=o.alpha, target_modules=target_regex(model, o.targets),
                          task_type="CAUSAL_LM")
