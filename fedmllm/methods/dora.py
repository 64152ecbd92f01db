"""DoRA (Liu et al. 2024, via peft ``use_dora``): weight-decomposed LoRA. W' = m · (W + s·BA) /
‖W + s·BA‖ (column norms); the state adds the magnitude vectors ``lora_magnitude_vector``.
`lora_factors` gives the direction update s·BA; the magnitudes are separate state entries."""

from __future__ import annotations

from fedmllm.methods.base import register_method
from fedmllm.methods.lora import LoRA


@register_method
class DoRA(LoRA):
    """LoRA with a learned magnitude per output feature."""

    name = "dora"
    use_dora = True
