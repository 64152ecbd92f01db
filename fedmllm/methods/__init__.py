"""Tuning methods: one file per method, registered in `METHODS` (see `base`).

Selective: ``full_st``, ``top_layers``, ``last_layer``, ``projector``. Reparameterization (peft):
``lora``, ``dora``, ``loha``, ``lokr``, ``vera``. Additive: ``adapter`` (own bottleneck adapter),
``prompt`` (peft prompt tuning), ``ia3`` (peft).
"""

from fedmllm.methods import (  # noqa: F401  (each import registers one method)
    adapter, dora, full_st, ia3, last_layer, loha, lokr, lora, projector, prompt, top_layers, vera,
)
from fedmllm.methods.base import (
    FAMILIES, METHODS, MethodOptions, TuningMethod, apply_method, load_method, make_method,
    read_method_file, register_method, trainable_summary,
)

__all__ = [
    "FAMILIES", "METHODS", "MethodOptions", "TuningMethod", "apply_method", "load_method",
    "make_method", "read_method_file", "register_method", "trainable_summary",
]
