"""Architecture knowledge as data: which parameters form which module group, per ``model_type``.

Tuning methods select what trains by group (vision tower, projector, LLM layers, ...), never by
``if model_type == ...`` branches. Patterns are regular expressions matched with ``re.fullmatch``
against parameter names (``model.named_parameters()``) or, for the ``*_linear`` entries, against
module names (``model.named_modules()``; that is what peft's string ``target_modules`` matches).
Names are those of the bare transformers model; peft wrapping prefixes them with
``base_model.model.``, which `strip_peft_prefix` removes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

import torch.nn as nn

from fedmllm.errors import UserError

GROUP_NAMES = ("vision", "projector", "llm_layers", "llm_norm", "embeddings", "lm_head", "extra")

_LLM_LINEAR = r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class ModuleGroups:
    """Regexes naming one architecture's module groups.

    ``llm_layers`` has one capture group: the decoder layer index. A pattern of ``None`` means the
    architecture has no such group (a method that needs it fails with a clear error).
    """

    model_type: str
    vision: Optional[str]
    projector: Optional[str]
    llm_layers: str
    llm_norm: str
    embeddings: str
    lm_head: str
    extra: Optional[str] = None
    llm_linear: str = r".*language_model\.layers\.\d+\.(self_attn|mlp)\." + _LLM_LINEAR
    projector_linear: Optional[str] = None

    def pattern(self, group: str) -> str:
        if group not in GROUP_NAMES:
            raise ValueError(f"unknown module group {group!r}; valid: {GROUP_NAMES}")
        pat = getattr(self, group)
        if pat is None:
            raise UserError(
                f"model type {self.model_type!r} has no {group!r} module group "
                f"(it has: {', '.join(g for g in GROUP_NAMES if getattr(self, g) is not None)})"
            )
        return pat


_LLAVA_COMMON = dict(
    vision=r"model\.vision_tower\..*",
    projector=r"model\.multi_modal_projector\..*",
    llm_layers=r"model\.language_model\.layers\.(\d+)\..*",
    llm_norm=r"model\.language_model\.norm\..*",
    embeddings=r"model\.language_model\.embed_tokens\..*",
    lm_head=r"lm_head\..*",
    projector_linear=r".*multi_modal_projector\.(linear_1|linear_2)",
)

GROUPS: dict[str, ModuleGroups] = {
    "llava_onevision": ModuleGroups("llava_onevision", extra=r"model\.image_newline", **_LLAVA_COMMON),
    "llava": ModuleGroups("llava", **_LLAVA_COMMON),
    "llava_next": ModuleGroups("llava_next", extra=r"model\.image_newline", **_LLAVA_COMMON),
    # Qwen2-VL: the patch merger plays the projector's role.
    "qwen2_vl": ModuleGroups(
        "qwen2_vl",
        vision=r"model\.visual\.(?!merger\.).*",
        projector=r"model\.visual\.merger\..*",
        llm_layers=r"model\.language_model\.layers\.(\d+)\..*",
        llm_norm=r"model\.language_model\.norm\..*",
        embeddings=r"model\.language_model\.embed_tokens\..*",
        lm_head=r"lm_head\..*",
        projector_linear=r".*visual\.merger\.mlp\.(0|2)",
    ),
}


def strip_peft_prefix(name: str) -> str:
    """``base_model.model.model.x`` → ``model.x`` (peft wraps the bare model twice)."""
    return name[len("base_model.model."):] if name.startswith("base_model.model.") else name


def groups_for(model: nn.Module) -> ModuleGroups:
    """The `ModuleGroups` of ``model`` (a bare or peft-wrapped transformers model)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in GROUPS:
        raise UserError(
            f"no module-group table for model type {model_type!r}; known: {', '.join(sorted(GROUPS))} "
            "(add a row to fedmllm/models/groups.py)"
        )
    return GROUPS[model_type]


def params_in_group(model: nn.Module, group: str, layers: Optional[set[int]] = None) -> list[str]:
    """Parameter names (as ``model.named_parameters()`` yields them) in ``group``.

    For ``llm_layers``, ``layers`` restricts to those decoder-layer indices.
    """
    regex = re.compile(groups_for(model).pattern(group))
    out = []
    for name, _ in model.named_parameters():
        m = regex.fullmatch(strip_peft_prefix(name))
        if not m:
            continue
        if layers is not None and group == "llm_layers" and int(m.group(1)) not in layers:
            continue
        out.append(name)
    return out


def num_llm_layers(model: nn.Module) -> int:
    """Number of decoder layers of the language model."""
    regex = re.compile(groups_for(model).llm_layers)
    idx = {int(m.group(1)) for n, _ in model.named_parameters() if (m := regex.fullmatch(strip_peft_prefix(n)))}
    return max(idx) + 1 if idx else 0

# Qwen2.5-VL names its modules exactly as Qwen2-VL does (checked on transformers 5.23).
GROUPS["qwen2_5_vl"] = replace(GROUPS["qwen2_vl"], model_type="qwen2_5_vl")
