"""``fltrust``: FLTrust (Cao et al. NDSS 2021), `robust.fltrust`: the server trains the global
model on its own small clean root set each round (``root_n`` samples per downstream task, beyond
the clients' pool: `FederatedExperiment.root_samples`), and weights each client's update by the
ReLU'd cosine to that reference update, rescaled to its norm.

The reference training is supplied by the experiment (``reference(server_round, global_state)``
-> the server's trained shared state); the rule itself is pure."""

from __future__ import annotations

from typing import Callable, Optional

from fedmllm.errors import UserError
from fedmllm.federated.algorithms.base import STATE, Algorithm, merge, register_algorithm
from fedmllm.federated.robust import fltrust


@register_algorithm
class FLTrust(Algorithm):
    """Trust-weighted, norm-equalized mean of the clients' updates against a server reference."""

    name = "fltrust"
    description = "FLTrust, Cao et al. NDSS 2021 (cosine trust against a server root-set update)"
    defaults = {"root_n": 8}
    needs_reference = True

    def validate(self) -> None:
        if self.options["root_n"] < 1:
            raise ValueError(f"root_n must be >= 1 (root samples per downstream task), got {self.options['root_n']}")

    def reset(self) -> None:
        self.reference: Optional[Callable] = None
        self._info: dict = {}

    def aggregate(self, server_round, global_state, replies):
        if self.reference is None:
            raise UserError("strategy 'fltrust' needs the server's reference update (run it through an experiment)")
        ref = self.reference(server_round, global_state)
        new, scores = fltrust([r.arrays[STATE] for r in replies], {k: global_state[k] for k in ref}, ref)
        self._info = {"trust": [round(s, 4) for s in scores], "trusted": sum(s > 0 for s in scores)}
        return merge(global_state, new)

    def round_info(self):
        return dict(self._info)
