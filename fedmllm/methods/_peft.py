"""Shared behaviour of methods implemented by peft (LoRA, DoRA, LoHa, LoKr, VeRA, IA3, prompt).

The state is exactly ``get_peft_model_state_dict(model)`` (keys without the adapter name, as in
``adapter_model.safetensors``); those tensors share storage with the live parameters, so
`get_state` clones them and `state_parameters` maps each key to its parameter by storage.
Targets are regexes built from the module-group table (peft ``re.fullmatch``-es a string
``target_modules`` against module names), never ``["q_proj", ...]``, which would also hit SigLIP.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
from peft import PeftConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from fedmllm.errors import UserError
from fedmllm.methods.base import MethodOptions, TuningMethod
from fedmllm.models.groups import groups_for

TARGETS = ("llm", "llm+projector")
ADAPTER_FILE = "adapter_model.safetensors"


def target_regex(model: nn.Module, targets: str) -> str:
    """Regex over module names: the LLM's linear layers, optionally plus the projector's."""
    g = groups_for(model)
    if targets == "llm":
        return g.llm_linear
    if g.projector_linear is None:
        raise UserError(f"model type {g.model_type!r} has no projector linear layers to target")
    return f"(?:{g.llm_linear})|(?:{g.projector_linear})"


def check_targeted(model: nn.Module, regex: str, method: str) -> None:
    """`UserError` if ``regex`` matches no module of ``model``."""
    import re

    pat = re.compile(regex)
    if not any(pat.fullmatch(n) for n, _ in model.named_modules()):
        raise UserError(f"{method}: no module of model type {groups_for(model).model_type!r} "
                        f"matches the target pattern {regex!r}")


@dataclass
class RankOptions(MethodOptions):
    """Options of low-rank reparameterizations.

    r: rank. alpha: scaling numerator (LoRA scales ΔW by alpha / r). targets: ``"llm"`` (every LLM
    linear layer) or ``"llm+projector"``. Paper GPU configs use r=32, alpha=64 on the LLM.
    """

    r: int = 8
    alpha: float = 16.0
    targets: str = "llm"

    def validate(self, model=None):
        if self.r < 1:
            raise UserError(f"rank r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise UserError(f"alpha must be > 0, got {self.alpha}")
        if self.targets not in TARGETS:
            raise UserError(f"targets must be one of {', '.join(TARGETS)}; got {self.targets!r}")
        if model is not None:
            target_regex(model, self.targets)


class PeftMethod(TuningMethod):
    """A method whose `apply` is ``get_peft_model(model, self.peft_config(model))``."""

    is_peft = True

    @abstractmethod
    def peft_config(self, model: nn.Module) -> PeftConfig:
        """The peft config for ``model`` (targets resolved through the module-group table)."""

    def _apply(self, model: nn.Module) -> nn.Module:
        return get_peft_model(model, self.peft_config(model))

    def state_names(self, model: nn.Module) -> list[str]:
        return list(get_peft_model_state_dict(model))

    def get_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}

    def state_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        by_ptr = {p.data_ptr(): p for p in model.parameters() if p.requires_grad}
        out = {}
        for k, v in get_peft_model_state_dict(model).items():
            p = by_ptr.get(v.data_ptr())
            if p is None or p.shape != v.shape:
                raise ValueError(f"{self.name}: state entry {k!r} is not a trainable parameter")
            out[k] = p
        return out

    def set_state(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        self.check_state(model, state)
        result = set_peft_model_state_dict(model, dict(state))
        self._check_loaded(model, state, result.missing_keys, result.unexpected_keys)

    def _check_loaded(self, model: nn.Module, state: Mapping[str, torch.Tensor],
                      missing: list[str], unexpected: list[str]) -> None:
        # peft loads non-strictly, so every base weight is "missing": only adapter keys count.
        adapter = {n for n, p in model.named_parameters() if p.requires_grad}
        lost = sorted(adapter & set(missing))
        if lost or unexpected:
            raise ValueError(f"{self.name}: peft did not load adapter keys {lost[:5]}; "
                             f"unexpected keys {list(unexpected)[:5]}")

    def save(self, model: nn.Module, out_dir: str | Path) -> Path:
        """PEFT format (``adapter_config.json`` + ``adapter_model.safetensors``) + method file."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
        self._write_method_file(out, model)
        return out

    def load(self, model: nn.Module, in_dir: str | Path) -> None:
        path = Path(in_dir)
        self._check_method_file(path)
        self.set_state(model, load_file(str(path / ADAPTER_FILE)))
