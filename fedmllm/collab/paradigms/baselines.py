"""The collaboration baselines on the identical split: ``small_fedavg`` (the small models federated,
no large model), ``large_zero`` (the large base as it is) and ``large_pooled`` (the large model
tuned centrally on all client data: the upper bound the privacy setting forbids). Only
``small_fedavg`` has rounds; the experiment runs the other two in the server process."""

from __future__ import annotations

from fedmllm.collab.base import Paradigm, register_paradigm


@register_paradigm
class SmallFedAvg(Paradigm):
    name = "small_fedavg"
    description = "baseline: FedAvg of the small LoRA, no large model"
    family = "baseline"
    large_changes = False


@register_paradigm
class LargeZero(Paradigm):
    name = "large_zero"
    description = "baseline: the large base model, untuned"
    family = "baseline"
    trains_small = False
    rounds = False
    large_changes = False


@register_paradigm
class LargePooled(Paradigm):
    name = "large_pooled"
    description = "baseline: the large model's LoRA tuned centrally on the union of the clients' data"
    family = "baseline"
    trains_small = False
    rounds = False
