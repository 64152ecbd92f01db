"""IA3 (Liu et al. 2022, via peft): learned vectors rescale the attention keys and values and the
FFN's intermediate activations (input of ``down_proj``); ones at init, so the model is unchanged.
Classed additive (the paper's taxonomy puts rescaling vectors with added parameters)."""

from __future__ import annotations

import torch.nn as nn
from peft import IA3Config

from fedmllm.methods._peft import PeftMethod, check_targeted
from fedmllm.methods.base import MethodOptions, register_method
from fedmllm.models.groups import groups_for

# IA3 paper, Sec. 3.3: rescale keys, values and the FFN's inner activations (Llama/Qwen names).
_KV_FFN = r"(?=.*\.(?:k_proj|v_proj|down_proj)$)"
_FFN = r"(?=.*\.down_proj$)"


@register_method
class IA3(PeftMethod):
    """IA3 on the LLM's k/v projections and FFN down projections (no options)."""

    name = "ia3"
    family = "additive"
    Options = MethodOptions

    def peft_config(self, model: nn.Module) -> IA3Config:
        llm = f"(?:{groups_for(model).llm_linear})"
        check_targeted(model, _KV_FFN + llm, self.name)
        return IA3Config(target_modules=_KV_FFN + llm, feedforward_modules=_FFN + llm,
                         task_type="CAUSAL_LM")
