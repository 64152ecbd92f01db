"""Offsite-tuning emulators of the large LLaVA-OneVision (Xiao et al. 2023, "Offsite-Tuning";
FedBiOT, Wu et al. 2024).

The server splits its large language model into an *adapter* (the first ``bottom`` and last
``top`` decoder layers) and the middle layers between them. Clients get an *emulator*: the adapter
plus a uniform layer drop of the middle (offsite-tuning's ``uniform_choose_layers``: ``k`` of
``n`` middle layers at ``round(i * (n - 1) / (k - 1))``, i = 0..k-1), and the unchanged vision
tower, projector, embeddings, norm and head. Clients tune LoRA on the emulator's adapter layers
only; `plug_adapter` renames that LoRA state to the large model's layer indices, so the server
plugs it into the full model. LoRA keys of the emulator's middle layers are dropped: those layers
stand in for the large model's middle and stay frozen.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch.nn as nn

from fedmllm.errors import UserError
from fedmllm.models.groups import GROUPS, strip_peft_prefix

PLAN_FILE = "emulator.json"  # the plan, beside the emulator checkpoint
PER_LAYER_CONFIG = ("layer_types",)  # text-config lists with one entry per decoder layer
# Decoder-layer index of a (peft-prefixed) parameter name, from the module-group table.
_LAYER = re.compile(GROUPS["llava_onevision"].llm_layers)


@dataclass(frozen=True)
class EmulatorPlan:
    """Which large-model decoder layers an emulator keeps.

    bottom: the first ``bottom`` layers, kept as the trainable adapter.
    top: the last ``top`` layers, kept as the trainable adapter.
    middle: large-model indices of the middle layers kept (frozen), increasing.
    num_layers: decoder layers of the large model.
    """

    bottom: int
    top: int
    middle: tuple[int, ...]
    num_layers: int

    def __post_init__(self):
        object.__setattr__(self, "middle", tuple(int(i) for i in self.middle))
        inside = range(self.bottom, self.num_layers - self.top)
        if self.bottom < 1 or self.top < 1 or not self.middle or list(self.middle) != sorted(set(self.middle)) \
                or any(i not in inside for i in self.middle):
            raise ValueError(f"invalid emulator plan {self}: need bottom, top >= 1 and a non-empty, increasing "
                             f"middle within [{self.bottom}, {self.num_layers - self.top})")

    def emulator_layers(self) -> list[int]:
        """Large-model indices of the emulator's layers, in emulator order."""
        return [*range(self.bottom), *self.middle, *range(self.num_layers - self.top, self.num_layers)]

    def adapter_layers(self) -> list[int]:
        """Large-model indices of the adapter (bottom then top layers)."""
        return [*range(self.bottom), *range(self.num_layers - self.top, self.num_layers)]

    def to_large(self, i: int) -> int:
        """The large-model index of emulator layer ``i``."""
        layers = self.emulator_layers()
        if not 0 <= i < len(layers):
            raise ValueError(f"emulator layer {i} out of range: the emulator has layers 0..{len(layers) - 1}")
        return layers[i]


def plan_emulator(num_layers: int, bottom: int = 1, top: int = 1, keep_middle: float = 0.5) -> EmulatorPlan:
    """The plan of an emulator keeping ``bottom`` + ``top`` adapter layers and
    ``max(1, round(keep_middle * n))`` of the ``n = num_layers - bottom - top`` middle layers,
    evenly spaced with the first and last middle layer included (offsite-tuning's uniform drop;
    one kept layer is the centre one). E.g. 6 layers, 1 + 1 adapter, 0.5: middle 1..4 → (1, 4).
    """
    for name, value in (("bottom", bottom), ("top", top)):
        if value < 1:
            raise UserError(f"offsite: {name} must be >= 1 (adapter layers kept at the {name} of the "
                            f"large model), got {value}")
    if not 0.0 < keep_middle <= 1.0:
        raise UserError(f"offsite: keep_middle must be in (0, 1] (the fraction of the middle layers the "
                        f"emulator keeps), got {keep_middle}")
    if num_layers < bottom + top + 1:
        raise UserError(f"offsite needs a large model deeper than its adapter: {num_layers} layers < bottom + "
                        f"top + 1 = {bottom + top + 1}; use bottom + top <= {num_layers - 1} or a deeper model")
    count = num_layers - bottom - top
    k = max(1, round(keep_middle * count))
    picks = [round((count - 1) / 2)] if k == 1 else [round(i * (count - 1) / (k - 1)) for i in range(k)]
    return EmulatorPlan(bottom=bottom, top=top, middle=tuple(bottom + j for j in picks), num_layers=num_layers)


def build_emulator(model: nn.Module, plan: EmulatorPlan) -> nn.Module:
    """A deep copy of the bare large model whose language model keeps only ``plan``'s layers
    (their weights copied, the dropped layers never copied); the text config's layer count and
    per-layer lists follow, and every attention's ``layer_idx`` is renumbered for the KV cache."""
    _check_bare(model, "build an emulator from")
    layers = model.get_decoder().layers
    if len(layers) != plan.num_layers:
        raise ValueError(f"the plan is for a {plan.num_layers}-layer model; this one has {len(layers)} layers")
    kept = plan.emulator_layers()
    # Map dropped layers to None in the memo: deepcopy then skips their weights entirely.
    memo = {id(layer): None for i, layer in enumerate(layers) if i not in kept}
    emulator = copy.deepcopy(model, memo)
    decoder = emulator.get_decoder()
    decoder.layers = nn.ModuleList([decoder.layers[i] for i in kept])
    for new, layer in enumerate(decoder.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    for config in {id(c): c for c in (emulator.config.text_config, decoder.config)}.values():
        for name in PER_LAYER_CONFIG:
            values = getattr(config, name, None)
            if values is not None:
                if len(values) != plan.num_layers:
                    raise ValueError(f"text config {name} has {len(values)} entries for {plan.num_layers} layers")
                setattr(config, name, [values[i] for i in kept])
        config.num_hidden_layers = len(kept)
    return emulator


def save_emulator(bundle, plan: EmulatorPlan, folder: str | Path) -> Path:
    """Save the emulator ``bundle`` (a `ModelBundle` whose model `build_emulator` made) in
    ``save_pretrained`` layout plus ``emulator.json`` (the plan); ``build_model(str(folder))``
    loads the emulator, `read_plan` its plan."""
    from fedmllm.models import save_bundle

    _check_bare(bundle.model, "save as an emulator")
    have = len(bundle.model.get_decoder().layers)
    if have != len(plan.emulator_layers()):
        raise ValueError(f"the model has {have} layers, the plan's emulator {len(plan.emulator_layers())}; "
                         "save the model build_emulator(large, plan) returns")
    folder = save_bundle(bundle, folder)
    record = {**asdict(plan), "emulator_layers": plan.emulator_layers()}
    (folder / PLAN_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def read_plan(folder: str | Path) -> EmulatorPlan:
    """The plan `save_emulator` wrote beside an emulator checkpoint."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise UserError(f"{folder} is not an offsite emulator checkpoint (no {PLAN_FILE})")
    try:
        record = json.loads(path.read_text())
        return EmulatorPlan(bottom=record["bottom"], top=record["top"], middle=tuple(record["middle"]),
                            num_layers=record["num_layers"])
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a valid emulator plan ({type(err).__name__}: {err})") from None


def emulator_key_to_large(key: str, plan: EmulatorPlan) -> str:
    """``...language_model.layers.<i>.rest`` of the emulator → the same key with the large model's
    index of emulator layer ``i`` (peft-prefixed or bare names)."""
    start, end, i = _layer_span(key)
    return f"{key[:start]}{plan.to_large(i)}{key[end:]}"


def adapter_keys(keys: Iterable[str], plan: EmulatorPlan) -> tuple[list[str], list[str]]:
    """Emulator state keys split into (adapter-layer keys, middle-layer keys), in input order."""
    adapter_set = set(plan.adapter_layers())
    adapter, frozen = [], []
    for key in keys:
        (adapter if plan.to_large(_layer_span(key)[2]) in adapter_set else frozen).append(key)
    return adapter, frozen


def plug_adapter(emulator_state: Mapping[str, np.ndarray], plan: EmulatorPlan) -> dict[str, np.ndarray]:
    """The adapter layers' entries of an emulator LoRA state under the large model's keys (the
    arrays themselves, not copies); middle-layer entries are dropped."""
    adapter, _ = adapter_keys(emulator_state, plan)
    return {emulator_key_to_large(k, plan): emulator_state[k] for k in adapter}


def _layer_span(key: str) -> tuple[int, int, int]:
    """(start, end, value) of the decoder-layer index in ``key``; `ValueError` for other keys."""
    bare = strip_peft_prefix(key)
    match = _LAYER.fullmatch(bare)
    if match is None:
        raise ValueError(f"{key!r} is not a decoder-layer key of the language model: an offsite adapter "
                         "holds only LLM-layer state (LoRA targets 'llm')")
    offset = len(key) - len(bare)
    return match.start(1) + offset, match.end(1) + offset, int(match.group(1))


def _check_bare(model: nn.Module, what: str) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ValueError(f"cannot {what} a model a tuning method was applied to; use the bare base model")
