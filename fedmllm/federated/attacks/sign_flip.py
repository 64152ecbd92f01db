"""``sign_flip``: upload received - factor x (trained - received), the update flipped and scaled.

With a fraction f of attackers of equal weight, FedAvg's mean update becomes
(1 - f - f x factor) x the honest mean: at f = 0.2 and the default factor 4 it is 0, training
stalls (factor 1, the plain flip, only slows it to 0.6 x). Flipped, scaled updates are the usual
sign-flipping adversary of the Byzantine-robustness literature.
"""

from __future__ import annotations

from fedmllm.errors import UserError
from fedmllm.federated.attacks.base import Attack, delta, rebuild, register_attack


@register_attack
class SignFlip(Attack):
    name = "sign_flip"
    description = "sign flipping: upload -factor x the update (Byzantine model poisoning)"
    defaults = {"factor": 4.0}

    def validate(self) -> None:
        if self.options["factor"] <= 0:
            raise UserError(f"attack 'sign_flip' option 'factor' must be > 0, got {self.options['factor']}")

    def poison_update(self, trained, received, rng):
        d = delta(trained, received)
        return rebuild({k: -self.options["factor"] * v for k, v in d.items()}, trained, received)
