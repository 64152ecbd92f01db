"""``proxy``: proxy-tuning at decode time (Liu et al. 2024, "Tuning Language Models by Proxy"): the
large base model decodes with logits_large + alpha (logits_small,tuned - logits_small,base), where
the tuned small model is the federated one (``small_fedavg``'s final adapter); the large model is
never trained. Across vocabularies the offset is applied to large tokens that are whole words of
the small vocabulary (`fedmllm.collab.proxy`); the rest get none."""

from __future__ import annotations

from fedmllm.collab.base import Paradigm, register_paradigm


@register_paradigm
class Proxy(Paradigm):
    name = "proxy"
    description = "proxy-tuning, Liu et al. 2024: large base + (federated small tuned - small base) logits"
    family = "decode"
    trains_small = False
    rounds = False
    large_changes = False
