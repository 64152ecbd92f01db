"""VeRA (Kopiczko et al. 2024, via peft): ΔW = Λb B Λd A with frozen random A, B shared by all
layers and trainable scaling vectors Λb (zero at init) and Λd.

The communicated state is the scaling vectors only (``save_projection=False``): A and B are
regenerated from ``projection_prng_key``, identical on every client and on reload, so states
average element-wise and every state entry is a trainable parameter.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch.nn as nn
from peft import VeraConfig

from fedmllm.errors import UserError
from fedmllm.methods._peft import TARGETS, PeftMethod, target_regex
from fedmllm.methods.base import MethodOptions, register_method


@dataclass
class VeraOptions(MethodOptions):
    """r: rank of the shared random projections (peft's default 256). d_initial: initial Λd.
    dropout: on the VeRA input. targets: ``"llm"`` or ``"llm+projector"``. seed: the
    projections' PRNG key (must match between clients and on reload)."""

    r: int = 256
    d_initial: float = 0.1
    dropout: float = 0.0
    targets: str = "llm"
    seed: int = 0

    def validate(self, model=None):
        if self.r < 1:
            raise UserError(f"vera: r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"vera: dropout must be in [0, 1), got {self.dropout}")
        if self.targets not in TARGETS:
            raise UserError(f"vera: targets must be one of {', '.join(TARGETS)}; got {self.targets!r}")
        if model is not None:
            target_regex(model, self.targets)


@register_method
class VeRA(PeftMethod):
    """Vector-based random-matrix adaptation."""

    name = "vera"
    family = "reparameterization"
    Options = VeraOptions

    def peft_config(self, model: nn.Module) -> VeraConfig:
        o = self.options
        with warnings.catch_warnings():
            # peft warns that projections are not saved: deliberate, see the module docstring.
            warnings.filterwarnings("ignore", message=".*vera_A and vera_B.*")
            return VeraConfig(r=o.r, d_initial=o.d_initial, vera_dropout=o.dropout,
                              target_modules=target_regex(model, o.targets), save_projection=False,
                              projection_prng_key=o.seed, task_type="CAUSAL_LM")
