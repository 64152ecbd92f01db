"""``scale``: upload received + factor x (trained - received), a boosted update (model
replacement, Bagdasaryan et al. 2020): one client's update outweighs the others' in a mean."""

from __future__ import annotations

from fedmllm.federated.attacks.base import ScaledUpdate, register_attack


@register_attack
class Scale(ScaledUpdate):
    name = "scale"
    description = "scaling (boosting): upload factor x the update, Bagdasaryan et al. 2020"
    defaults = {"factor": 10.0}
