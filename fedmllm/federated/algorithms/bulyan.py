"""``bulyan``: Bulyan (El Mhamdi et al. 2018), `robust.bulyan`: a selection set of n - 2f states by
iterated Krum, then a coordinate-wise trimmed mean around the median; equal to Flower's
``Bulyan`` (tests/test_robust.py). Needs n >= 4f + 3 clients per round."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import STATE, Algorithm, merge, register_algorithm
from fedmllm.federated.robust import bulyan


@register_algorithm
class Bulyan(Algorithm):
    """Krum selection followed by a trimmed coordinate-wise mean."""

    name = "bulyan"
    description = "Bulyan, El Mhamdi et al. 2018"
    defaults = {"num_malicious_nodes": 0}

    def validate(self) -> None:
        if self.options["num_malicious_nodes"] < 0:
            raise ValueError(f"num_malicious_nodes must be >= 0, got {self.options['num_malicious_nodes']}")

    def min_replies(self) -> int:
        """n >= 4f + 3 (El Mhamdi et al. 2018)."""
        return 4 * self.options["num_malicious_nodes"] + 3

    def aggregate(self, server_round, global_state, replies):
        state, _ = bulyan([r.arrays[STATE] for r in replies], self.options["num_malicious_nodes"])
        return merge(global_state, state)
