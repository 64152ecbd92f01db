"""What a tuning method is, the method registry, and the functions callers use.

A tuning method (Huang et al., arXiv 2503.04543, Sec. 3: selective, reparameterization, additive)
declares exactly which parameters train and which state is communicated. One subclass of
`TuningMethod` per file, registered by one `register_method` call. A method *instance* is bound to
its validated options (``method.options``): the options decide what trains (``top_layers.k``) and
how state is read (LoRA's ``alpha`` for `lora_factors`).

State ("the communicated state") is a flat ``dict[str, Tensor]``: for peft methods the keys of
``get_peft_model_state_dict`` (the adapter name removed, as in ``adapter_model.safetensors``); for
the others the names ``model.named_parameters()`` gives. `get_state` returns detached CPU clones,
`set_state` is strict (exact keys and shapes).
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Union

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from fedmllm.errors import UserError
from fedmllm.options import resolve_options
from fedmllm.registry import Registry

FAMILIES = ("selective", "reparameterization", "additive")
METHOD_FILE = "fedmllm_method.json"  # method name + options, beside every saved state
STATE_FILE = "tuned_state.safetensors"  # state of non-peft methods
_APPLIED = "_fedmllm_method"  # attribute marking a model a method was applied to


@dataclasses.dataclass
class MethodOptions:
    """Options of a method: a dataclass with defaults. Subclasses add fields and checks."""

    def validate(self, model: Optional[nn.Module] = None) -> None:
        """Raise `UserError` for invalid values; with ``model``, also for what this model lacks."""


OptionsLike = Union[MethodOptions, Mapping[str, Any], None]


class TuningMethod(ABC):
    """A tuning method bound to its options.

    Class attributes:
        name: registry name (``"lora"``).
        family: ``"selective"``, ``"reparameterization"`` or ``"additive"`` (the paper's taxonomy).
        is_peft: wraps the model with peft (state and saved format are peft's).
        averageable: states of clients can be averaged element-wise (False e.g. for AdaLoRA, whose
            rank masks differ between clients).
        identity_at_init: the model's outputs are unchanged right after `apply`.
        Options: the `MethodOptions` dataclass of this method.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    is_peft: ClassVar[bool] = False
    averageable: ClassVar[bool] = True
    identity_at_init: ClassVar[bool] = True
    Options: ClassVar[type[MethodOptions]] = MethodOptions

    def __init__(self, options: OptionsLike = None):
        self.options = self.parse_options(options)

    @classmethod
    def parse_options(cls, options: OptionsLike) -> MethodOptions:
        """``options`` (dict, Options or None) → validated Options; unknown keys and ill-typed
        values raise `UserError` (`fedmllm.options.resolve_options`, against the field defaults)."""
        if isinstance(options, cls.Options):
            opts = options
        elif options is None or isinstance(options, Mapping):
            opts = cls.Options(**resolve_options(f"tuning method {cls.name!r}", options, _defaults(cls.Options)))
        else:
            raise UserError(f"options of tuning method {cls.name!r} must be a table, got {options!r}")
        opts.validate(None)
        return opts

    # -- what subclasses implement -------------------------------------------------------------
    @abstractmethod
    def _apply(self, model: nn.Module) -> nn.Module:
        """Freeze everything, make exactly the declared parameters trainable (or wrap)."""

    @abstractmethod
    def state_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """State name → the live parameter it is read from (hooks key FedProx/SCAFFOLD by it)."""

    # -- shared behaviour ----------------------------------------------------------------------
    def state_names(self, model: nn.Module) -> list[str]:
        """The declared names of the communicated state, in a stable order."""
        return list(self.state_parameters(model))

    def apply(self, model: nn.Module, options: OptionsLike = None, *, seed: int = 0) -> nn.Module:
        """Validate options against ``model`` (before any compute), then apply; returns the model
        to train (the same object, or its peft wrapper). ``options`` rebinds this method's options.
        New parameters (LoRA's A, adapters) are initialised from ``seed``, not the global RNG."""
        if options is not None:
            self.options = self.parse_options(options)
        self.options.validate(model)
        if getattr(model, _APPLIED, None) is not None:
            raise ValueError(
                f"a tuning method ({getattr(model, _APPLIED)}) was already applied to this model; "
                "apply methods to a freshly built base model"
            )
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            tuned = self._apply(model)
        for m in {id(model): model, id(tuned): tuned}.values():  # peft modifies the base in place
            object.__setattr__(m, _APPLIED, self.name)  # a plain attribute, not a submodule
        return tuned

    def get_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The communicated state: detached CPU copies (never views of the live model)."""
        return {k: p.detach().to("cpu", copy=True) for k, p in self.state_parameters(model).items()}

    def set_state(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        """Load ``state`` into the live model; exact key set and shapes, else `ValueError`."""
        live = self.state_parameters(model)
        self.check_state(model, state, live)
        with torch.no_grad():
            for k, p in live.items():
                p.copy_(state[k])

    def check_state(self, model: nn.Module, state: Mapping[str, torch.Tensor],
                    live: Optional[Mapping[str, nn.Parameter]] = None) -> None:
        """Raise `ValueError` naming missing / unexpected keys and shape mismatches."""
        live = self.state_parameters(model) if live is None else live
        missing = sorted(set(live) - set(state))
        unexpected = sorted(set(state) - set(live))
        if missing or unexpected:
            raise ValueError(
                f"{self.name} state does not match the model: missing keys {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unexpected keys {unexpected[:5]}"
                f"{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
            )
        bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(p.shape)}" for k, p in live.items()
               if tuple(state[k].shape) != tuple(p.shape)]
        if bad:
            raise ValueError(f"{self.name} state has wrong shapes: {'; '.join(bad[:5])}")

    def save(self, model: nn.Module, out_dir: str | Path) -> Path:
        """Write the state (safetensors) and ``fedmllm_method.json`` to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.get_state(model), str(out / STATE_FILE), metadata={"format": "pt"})
        self._write_method_file(out, model)
        return out

    def load(self, model: nn.Module, in_dir: str | Path) -> None:
        """Load a state saved by `save` into a model this method was applied to (strict)."""
        path = Path(in_dir)
        self._check_method_file(path)
        self.set_state(model, load_file(str(path / STATE_FILE)))

    def lora_factors(self, state: Mapping[str, torch.Tensor]) -> list[tuple[str, str, float]]:
        """``(A key, B key, scaling)`` triples with effective ΔW = scaling · B @ A (LoRA-like only)."""
        return []

    def describe(self) -> dict[str, Any]:
        """JSON-able description: name, family and options."""
        return {"method": self.name, "family": self.family, "options": dataclasses.asdict(self.options)}

    def _write_method_file(self, out: Path, model: nn.Module) -> None:
        """The description and the base it was tuned on (`base_of`), checked by `load_method`."""
        (out / METHOD_FILE).write_text(json.dumps({**self.describe(), **base_of(model)}, indent=2) + "\n")

    def _check_method_file(self, path: Path) -> dict[str, Any]:
        info = read_method_file(path)
        if info["method"] != self.name:
            raise ValueError(f"{path} holds a {info['method']!r} state, not {self.name!r}")
        return info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"


def _defaults(options_cls: type[MethodOptions]) -> dict[str, Any]:
    """Option name -> default, in declaration order (every option must have a default)."""
    out = {}
    for f in dataclasses.fields(options_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            raise TypeError(f"{options_cls.__name__}.{f.name} has no default; every method option needs one")
    return out


METHODS: Registry[type[TuningMethod]] = Registry("method")


def register_method(cls: type[TuningMethod]) -> type[TuningMethod]:
    """Class decorator: check the declaration and register ``cls`` under ``cls.name``."""
    if cls.family not in FAMILIES:
        raise ValueError(f"method {cls.name!r}: family must be one of {FAMILIES}, got {cls.family!r}")
    if not (dataclasses.is_dataclass(cls.Options) and issubclass(cls.Options, MethodOptions)):
        raise ValueError(f"method {cls.name!r}: Options must be a MethodOptions dataclass")
    return METHODS.register(cls.name, cls)


def base_method(name: str) -> str:
    """The registered method behind a grid name: ``lora@proj`` is a *variant* of ``lora`` (its own
    ``[methods."lora@proj"]`` options, e.g. another target set), so one grid can hold both."""
    return name.split("@", 1)[0]


def make_method(name: str, options: OptionsLike = None) -> TuningMethod:
    """The registered method ``name`` (or a ``base@variant`` of it) bound to ``options`` (unknown
    name/options → `UserError`)."""
    return METHODS.get(base_method(name))(options)


def apply_method(model: nn.Module, name: str, options: OptionsLike = None, *, seed: int = 0
                 ) -> tuple[nn.Module, TuningMethod, MethodOptions]:
    """Apply method ``name`` to ``model``: returns (model to train, method, its options).
    ``seed`` initialises the method's new parameters."""
    method = make_method(name, options)
    return method.apply(model, seed=seed), method, method.options


def read_method_file(path: str | Path) -> dict[str, Any]:
    """The ``fedmllm_method.json`` written beside a saved state."""
    f = Path(path) / METHOD_FILE
    if not f.is_file():
        raise UserError(f"{path} is not a saved tuning state (no {METHOD_FILE})")
    return json.loads(f.read_text())


def base_of(model: nn.Module) -> dict[str, str]:
    """What a saved state records of its base: ``base_model_type`` (the transformers model type)
    and ``base_model`` (its checkpoint folder or hub id; "" for a fresh random init)."""
    config = getattr(model, "config", None)  # a peft wrapper passes the base's config through
    return {"base_model_type": str(getattr(config, "model_type", "")),
            "base_model": str(getattr(config, "_name_or_path", ""))}


def load_method(model: nn.Module, in_dir: str | Path) -> tuple[nn.Module, TuningMethod, MethodOptions]:
    """Apply the method saved in ``in_dir`` (with its options) to a fresh ``model`` and load its state.
    A state saved from another kind of base (``base_model_type``) is a `ValueError`: its keys and
    shapes may well fit (the tiny models share their LLM's shapes), its weights would not."""
    info = read_method_file(in_dir)
    saved, live = info.get("base_model_type"), base_of(model)["base_model_type"]
    if saved and live and saved != live:
        raise ValueError(f"{in_dir} was tuned on a {saved!r} model ({info.get('base_model') or 'random init'}), "
                         f"this base is a {live!r} model")
    tuned, method, options = apply_method(model, info["method"], info["options"])
    method.load(tuned, in_dir)
    return tuned, method, options


def trainable_summary(model: nn.Module) -> dict[str, Any]:
    """Trainable and total parameter counts (and the trainable fraction)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}
