"""``krum``: Krum (Blanchard et al. 2017), `robust.krum`: the new global state is the one client
state with the smallest sum of squared distances to its n - f - 2 nearest others; equal to
Flower's ``Krum`` (tests/test_robust.py).

Selection, not averaging, so it can carry non-averageable state."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import STATE, Algorithm, merge, register_algorithm
from fedmllm.federated.robust import krum


@register_algorithm
class Krum(Algorithm):
    """The most central client state."""

    name = "krum"
    description = "Krum, Blanchard et al. 2017"
    defaults = {"num_malicious_nodes": 0}
    handles_non_averageable = True

    def validate(self) -> None:
        if self.options["num_malicious_nodes"] < 0:
            raise ValueError(f"num_malicious_nodes must be >= 0, got {self.options['num_malicious_nodes']}")

    def min_replies(self) -> int:
        """n > 2f + 2 (Blanchard et al. 2017)."""
        return 2 * self.options["num_malicious_nodes"] + 3

    def aggregate(self, server_round, global_state, replies):
        state, _ = krum([r.arrays[STATE] for r in replies], self.options["num_malicious_nodes"])
        return merge(global_state, state)
