"""``multikrum``: Multi-Krum (Blanchard et al. 2017, Sec. 4): the mean of the m client states with
the best Krum scores, `robust.krum` with ``num_selected = m``; equal to Flower's ``MultiKrum``
(tests/test_robust.py)."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import STATE, Algorithm, merge, register_algorithm
from fedmllm.federated.robust import krum


@register_algorithm
class MultiKrum(Algorithm):
    """Average of the m most central client states."""

    name = "multikrum"
    description = "Multi-Krum, Blanchard et al. 2017"
    defaults = {"num_malicious_nodes": 0, "num_nodes_to_select": 1}

    def validate(self) -> None:
        if self.options["num_malicious_nodes"] < 0 or self.options["num_nodes_to_select"] < 1:
            raise ValueError("need num_malicious_nodes >= 0 and num_nodes_to_select >= 1, got "
                             f"{self.options['num_malicious_nodes']}, {self.options['num_nodes_to_select']}")

    def min_replies(self) -> int:
        """n > 2f + 2, and m of them to select."""
        return max(2 * self.options["num_malicious_nodes"] + 3, self.options["num_nodes_to_select"])

    def aggregate(self, server_round, global_state, replies):
        state, _ = krum([r.arrays[STATE] for r in replies], self.options["num_malicious_nodes"],
                        num_selected=self.options["num_nodes_to_select"],
                        weights=[r.num_examples for r in replies])
        return merge(global_state, state)
