"""``scale``: upload received + factor x (trained - received), a boosted update (model
replacement, Bagdasaryan et al. 2020): one client's update outweighs the others' in a mean."""

from __future__ import annotations

from fedmllm.errors import UserError
from fedmllm.federated.attacks.base import Attack, delta, rebuild, register_attack


@register_attack
class Scale(Attack):
    name = "scale"
    description = "scaling (boosting): upload factor x the update, Bagdasaryan et al. 2020"
    defaults = {"factor": 10.0}

    def validate(self) -> None:
        if self.options["factor"] <= 0:
            raise UserError(f"attack 'scale' option 'factor' must be > 0, got {self.options['factor']}")

    def poison_update(self, trained, received, rng):
        d = delta(trained, received)
        return rebuild({k: self.options["factor"] * v for k, v in d.items()}, trained, received)
