"""How federated algorithms enter the one local training loop: `TrainHook`.

The loop calls, with ``params`` = the trainable parameters by ``named_parameters`` name:
``on_start`` once; per optimizer step ``loss_term`` (added to the loss, once per step) and
``after_backward`` (may modify ``.grad``, before clipping and the optimizer step); ``on_end`` once.

Algorithm state (FedProx's global weights, SCAFFOLD's controls) travels keyed by the tuning
method's *state names*. For selective methods and the bottleneck adapter these are the
``named_parameters`` names. For peft methods they are ``get_peft_model_state_dict`` keys, which
drop the adapter name (``...q_proj.lora_A.weight`` for the parameter ``...q_proj.lora_A.default.weight``;
``prompt_embeddings`` for ``prompt_encoder.default.embedding.weight``). `state_parameters` maps
state names to the live parameters through the method, so hooks never parse names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from fedmllm.methods.base import TuningMethod

Params = Mapping[str, nn.Parameter]


class TrainHook:
    """Base hook: every callback does nothing."""

    def on_start(self, model: nn.Module, params: Params) -> None:
        """Called once before the first step."""

    def loss_term(self, model: nn.Module, params: Params) -> Optional[torch.Tensor]:
        """A scalar added to the loss of every optimizer step, or None."""
        return None

    def after_backward(self, model: nn.Module, params: Params) -> None:
        """Called after the gradients of a step are accumulated (may modify ``.grad``)."""

    def on_end(self, model: nn.Module, params: Params) -> None:
        """Called once after the last step."""


def state_parameters(model: nn.Module, method: Optional["TuningMethod"], params: Params) -> Params:
    """State name → live parameter: through ``method`` if given, else ``params`` as they are."""
    return method.state_parameters(model) if method is not None else params


def _match(kind: str, given: Mapping[str, torch.Tensor], live: Params) -> dict[str, tuple]:
    """Pair every given tensor with its live parameter; `ValueError` naming any mismatch."""
    missing, unexpected = sorted(set(live) - set(given)), sorted(set(given) - set(live))
    if missing or unexpected:
        raise ValueError(f"{kind}: keys differ from the trainable state: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return {k: (live[k], given[k]) for k in live}


class ProximalTerm(TrainHook):
    """FedProx (Li et al. 2020, Eq. 2): adds mu/2 · Σ‖w − w_global‖² over the trainable state.

    Args:
        mu: proximal coefficient (0 adds nothing, not even a zero term).
        reference: the global state the round started from, keyed by state names.
        method: the tuning method whose state names key ``reference`` (None: parameter names).
    """

    def __init__(self, mu: float, reference: Mapping[str, torch.Tensor],
                 method: Optional["TuningMethod"] = None):
        if mu < 0:
            raise ValueError(f"proximal mu must be >= 0, got {mu}")
        self.mu, self.reference, self.method = float(mu), reference, method
        self._pairs: list[tuple[nn.Parameter, torch.Tensor]] = []

    def on_start(self, model: nn.Module, params: Params) -> None:
        pairs = _match("ProximalTerm", self.reference, state_parameters(model, self.method, params))
        self._pairs = [(p, ref.detach().to(p.device, torch.float32)) for p, ref in pairs.values()]

    def loss_term(self, model: nn.Module, params: Params) -> Optional[torch.Tensor]:
        if self.mu == 0.0:
            return None
        sq = sum((p.float() - ref).pow(2).sum() for p, ref in self._pairs)
        return 0.5 * self.mu * sq


class ControlVariate(TrainHook):
    """SCAFFOLD (Karimireddy et al. 2020, Alg. 1 line 10): corrects every gradient by c − c_i.

    Args:
        c_global: the server control c, keyed by state names.
        c_local: this client's control c_i, same keys.
        method: the tuning method whose state names key the controls (None: parameter names).
    """

    def __init__(self, c_global: Mapping[str, torch.Tensor], c_local: Mapping[str, torch.Tensor],
                 method: Optional["TuningMethod"] = None, record_gradients: bool = False):
        self.c_global, self.c_local, self.method = c_global, c_local, method
        self._pairs: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.record_gradients = record_gradients
        self._names: list[str] = []
        self._grad_sum: list[torch.Tensor] = []
        self._count = 0

    def mean_gradients(self) -> dict[str, torch.Tensor]:
        """Mean raw (uncorrected) gradient per state name over the backward passes seen."""
        if not self.record_gradients or self._count == 0:
            raise ValueError("ControlVariate recorded no gradients (record_gradients=False or no step)")
        return {k: (g / self._count).cpu() for k, g in zip(self._names, self._grad_sum)}

    def on_start(self, model: nn.Module, params: Params) -> None:
        live = state_parameters(model, self.method, params)
        glob = _match("ControlVariate c_global", self.c_global, live)
        loc = _match("ControlVariate c_local", self.c_local, live)
        self._pairs = [(p, (c.detach().float() - loc[k][1].detach().float()).to(p.device, p.dtype))
                       for k, (p, c) in glob.items()]
        self._names = list(glob)
        self._grad_sum = [torch.zeros_like(p, dtype=torch.float32) for p, _ in self._pairs]
        self._count = 0

    def after_backward(self, model: nn.Module, params: Params) -> None:
        if self.record_gradients:
            self._count += 1
            for acc, (p, _) in zip(self._grad_sum, self._pairs):
                if p.grad is not None:
                    acc.add_(p.grad.float())
        for p, delta in self._pairs:
            if p.grad is None:
                p.grad = delta.clone()
            else:
                p.grad.add_(delta)


def scaffold_control_update(c_local: Mapping[str, torch.Tensor], c_global: Mapping[str, torch.Tensor],
                            x_global: Mapping[str, torch.Tensor], y_local: Mapping[str, torch.Tensor],
                            steps: int, lr: float) -> dict[str, torch.Tensor]:
    """SCAFFOLD option II (Karimireddy et al. 2020, Eq. 4): c_i⁺ = c_i − c + (x − y_i) / (K·η).

    ``steps`` = K local steps, ``lr`` = η. With Adam or a schedule, η is the configured peak lr (as
    OpenFedLLM does): the formula assumes plain SGD, so treat the controls as approximate there.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"scaffold update needs steps >= 1 and lr > 0, got {steps}, {lr}")
    return {k: c_local[k].float() - c_global[k].float()
            + (x_global[k].float() - y_local[k].float()) / (steps * lr) for k in c_local}
