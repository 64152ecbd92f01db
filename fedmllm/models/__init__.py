"""Models: the registry of built-in models, builders, tokenizer, processors and module groups.

``from fedmllm.models import build_model, save_bundle`` works; the names are resolved lazily from
`fedmllm.models.registry`, so importing ``fedmllm.models.groups`` alone does not load transformers.
"""

from __future__ import annotations

from typing import Any

_LAZY = ("MODELS", "ModelBundle", "ModelSpec", "register_model", "build_model", "save_bundle",
         "checkpoint_dir", "DTYPES")

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    # PEP 562: import the registry (and transformers) on first use only.
    if name in _LAZY:
        from fedmllm.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'fedmllm.models' has no attribute {name!r}")
