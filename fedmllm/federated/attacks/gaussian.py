"""``gaussian``: replace the update by Gaussian noise of the same L2 norm (times ``factor``), so
norm checks cannot tell it from an honest update."""

from __future__ import annotations

import numpy as np

from fedmllm.errors import UserError
from fedmllm.federated.attacks.base import Attack, delta, norm, rebuild, register_attack


@register_attack
class Gaussian(Attack):
    name = "gaussian"
    description = "Gaussian noise of the honest update's norm in place of the update"
    defaults = {"factor": 1.0}

    def validate(self) -> None:
        if self.options["factor"] <= 0:
            raise UserError(f"attack 'gaussian' option 'factor' must be > 0, got {self.options['factor']}")

    def poison_update(self, trained, received, rng):
        d = delta(trained, received)
        noise = {k: rng.standard_normal(np.shape(v)) for k, v in d.items()}
        s = self.options["factor"] * norm(d) / max(norm(noise), 1e-30)
        return rebuild({k: s * v for k, v in noise.items()}, trained, received)
