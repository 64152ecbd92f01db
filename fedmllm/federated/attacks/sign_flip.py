"""``sign_flip``: upload received - factor x (trained - received), the update flipped and scaled.

With a fraction f of attackers of equal weight, FedAvg's mean update becomes
(1 - f - f x factor) x the honest mean: at f = 0.2 and the default factor 4 it is 0, training
stalls (factor 1, the plain flip, only slows it to 0.6 x). Flipped, scaled updates are the usual
sign-flipping adversary of the Byzantine-robustness literature.
"""

from __future__ import annotations

from fedmllm.federated.attacks.base import ScaledUpdate, register_attack


@register_attack
class SignFlip(ScaledUpdate):
    name = "sign_flip"
    description = "sign flipping: upload -factor x the update (Byzantine model poisoning)"
    defaults = {"factor": 4.0}
    sign = -1.0
