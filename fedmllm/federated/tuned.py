"""The tuned models of one process, by LoRA rank, and how a global state is loaded into them.

A federated client (or the server) may need the base model with the tuning method at several
LoRA ranks (heterogeneous clients; a server-side global adapter of another rank). `TunedModels`
builds each on first use from one base bundle and caches it. `TunedModels.load` puts a state into
the matching model: the method's keys through the method (strict), and every LoRA residual R of a
layer (`fedmllm.federated.lora.residual_key`) into that layer's frozen base weight as W0 + R (W0
kept from the build, so residuals never accumulate across systems or clients).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from fedmllm.config import Config, method_options
from fedmllm.federated import lora
from fedmllm.federated.algorithms.base import Arrays, as_arrays, as_tensors


@dataclass
class Tuned:
    """One tuned model: the model, its method, the method's initial state and base weights W0."""

    model: Any
    method: Any
    initial: Arrays
    base_weights: dict[str, Any] = field(default_factory=dict)  # layer prefix -> W0 (torch)


def rank_scaling(cfg: Config) -> tuple[Optional[int], Optional[float]]:
    """(global rank r_g, scaling alpha / r_g) of a LoRA-family method, (None, None) otherwise."""
    options, _ = method_options(cfg, cfg.federated.method)
    from fedmllm.methods import make_method

    opts = make_method(cfg.federated.method, options).options
    if not hasattr(opts, "r") or not hasattr(opts, "alpha"):
        return None, None
    return int(opts.r), float(opts.alpha) / int(opts.r)


class TunedModels:
    """The base model with ``cfg.federated.method`` applied, one copy per LoRA rank."""

    def __init__(self, cfg: Config, bundle, *, share_base: bool = False):
        """``share_base``: the first model may use ``bundle.model`` itself (a process that owns
        the bundle, e.g. a Ray actor, built as ``build_model(cfg.model.name, pretrained=
        cfg.model.pretrained, seed=cfg.seed)``); the method is applied to it in place, so models of
        other ranks start from a base built again the same way. Otherwise every model is a deep copy."""
        self.cfg, self.bundle, self._share = cfg, bundle, share_base
        self.global_rank, self.scaling = rank_scaling(cfg)
        self._models: dict[Optional[int], Tuned] = {}

    def get(self, rank: Optional[int] = None) -> Tuned:
        """The tuned model of ``rank`` (None: the configured one)."""
        from fedmllm.methods import apply_method

        rank = None if rank == self.global_rank else rank
        if rank not in self._models:
            options, _ = method_options(self.cfg, self.cfg.federated.method)
            if rank is not None:  # keep the update's scale: alpha_k / r_k = alpha / r_g
                options = {**options, "r": int(rank), "alpha": float(self.scaling) * int(rank)}
            if self._share and not self._models:
                base = self.bundle.model
            elif self._share:  # bundle.model is the first rank's tuned model now: a fresh, equal base
                from fedmllm.models import build_model

                base = build_model(self.cfg.model.name, pretrained=self.cfg.model.pretrained, seed=self.cfg.seed).model
            else:
                base = copy.deepcopy(self.bundle.model)
            model, method, _ = apply_method(base, self.cfg.federated.method, options, seed=self.cfg.seed)
            self._models[rank] = Tuned(model, method, as_arrays(method.get_state(model)))
        return self._models[rank]

    def for_state(self, state: Mapping[str, np.ndarray]) -> Tuned:
        """The model whose rank matches ``state`` (the configured one for non-LoRA states)."""
        keys = [k for k in state if not lora.is_residual(k)]
        if self.global_rank is None or not lora.layers(keys):
            return self.get(None)
        return self.get(lora.rank_of({k: state[k] for k in keys}))

    def load(self, state: Mapping[str, np.ndarray]) -> Tuned:
        """Load ``state`` (method keys + optional residuals) into its model; returns that model."""
        tuned = self.for_state(state)
        residuals = {k: v for k, v in state.items() if lora.is_residual(k)}
        self.set_residuals(tuned, residuals)
        tuned.method.set_state(tuned.model, as_tensors({k: v for k, v in state.items() if k not in residuals}))
        return tuned

    def set_residuals(self, tuned: Tuned, residuals: Mapping[str, np.ndarray]) -> None:
        """Base weight = W0 + R for every layer given; W0 for every layer touched before."""
        import torch

        wanted = {k[: -len(lora.RESIDUAL_SUFFIX)]: v for k, v in residuals.items()}
        with torch.no_grad():
            for prefix in set(wanted) | set(tuned.base_weights):
                weight = base_weight(tuned.model, prefix)
                if prefix not in tuned.base_weights:
                    tuned.base_weights[prefix] = weight.detach().clone()
                w0 = tuned.base_weights[prefix]
                if prefix in wanted:
                    r = torch.as_tensor(np.asarray(wanted[prefix]))
                    if tuple(r.shape) != tuple(w0.shape):
                        raise ValueError(f"residual of {prefix!r} has shape {tuple(r.shape)}, "
                                         f"the base weight {tuple(w0.shape)}")
                    weight.copy_(w0 + r.to(w0.device, w0.dtype))  # W0 lives where the model was first touched
                else:
                    weight.copy_(w0)


def base_weight(model, prefix: str):
    """The frozen base weight of the LoRA layer a state prefix names (peft's ``base_layer``)."""
    module = model.get_submodule(prefix.rstrip("."))
    base = getattr(module, "base_layer", module)
    return base.weight
