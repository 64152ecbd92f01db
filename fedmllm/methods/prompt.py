"""Prompt tuning (Lester et al. 2021, via peft): ``num_virtual_tokens`` trainable embeddings are
prepended to every input's embeddings. Works with LLaVA image tokens (the model finds image
placeholders in ``inputs_embeds``) and with ``generate`` (checked: greedy generation agrees with
teacher forcing). Outputs change at init (the prompt is random), so no identity guarantee.

peft quirk (peft's ``utils/save_and_load.py``, ``set_peft_model_state_dict``, peft 0.21): it runs
``model.load_state_dict(..., strict=False)``, which reports ``prompt_embeddings`` as unexpected and
the prompt encoder's weight as missing, and then loads the prompt encoder explicitly
(``_load_adapter_state_dict``); `set_state` discounts exactly that pair and then checks the loaded
value itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn as nn
from peft import PromptTuningConfig

from fedmllm.errors import UserError
from fedmllm.methods._peft import PeftMethod
from fedmllm.methods.base import MethodOptions, register_method

_KEY = "prompt_embeddings"


@dataclass
class PromptOptions(MethodOptions):
    """num_virtual_tokens: length of the learned soft prompt."""

    num_virtual_tokens: int = 8

    def validate(self, model=None):
        if self.num_virtual_tokens < 1:
            raise UserError(f"prompt: num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")


@register_method
class PromptTuning(PeftMethod):
    """Soft prompt tuning."""

    name = "prompt"
    family = "additive"
    identity_at_init = False
    Options = PromptOptions

    def peft_config(self, model: nn.Module) -> PromptTuningConfig:
        return PromptTuningConfig(num_virtual_tokens=self.options.num_virtual_tokens,
                                  task_type="CAUSAL_LM")

    def state_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        # The saved entry is the embedding of tokens 0..n-1, i.e. the whole embedding table.
        return {_KEY: model.prompt_encoder[model.active_adapter].embedding.weight}

    def _check_loaded(self, model: nn.Module, state: Mapping[str, torch.Tensor],
                      missing: list[str], unexpected: list[str]) -> None:
        weight = self.state_parameters(model)[_KEY]
        quirk = {n for n, p in model.named_parameters() if p is weight}
        super()._check_loaded(model, state, [m for m in missing if m not in quirk],
                              [u for u in unexpected if u != _KEY])
        if not torch.equal(weight.detach().cpu(), state[_KEY].to(weight.dtype).cpu()):
            raise ValueError("prompt: peft did not load prompt_embeddings")
