"""``normbound``: norm bounding (Sun et al. 2019), `robust.norm_bounded_mean`: every client's
update is clipped to L2 norm ``max_norm`` (0: the median update norm of the round) before the
example-weighted mean. Defends against boosted (scaled) updates; a sign-flipped update of honest
size passes."""

from __future__ import annotations

from fedmllm.federated.algorithms.base import STATE, Algorithm, merge, register_algorithm
from fedmllm.federated.robust import norm_bounded_mean


@register_algorithm
class NormBound(Algorithm):
    """FedAvg of the clients' updates, each clipped to a norm bound."""

    name = "normbound"
    description = "norm bounding, Sun et al. 2019 (updates clipped to max_norm, then FedAvg)"
    defaults = {"max_norm": 0.0}

    def validate(self) -> None:
        if self.options["max_norm"] < 0:
            raise ValueError(f"max_norm must be >= 0 (0 = the round's median update norm), got {self.options['max_norm']}")

    def reset(self) -> None:
        self._info: dict = {}

    def aggregate(self, server_round, global_state, replies):
        states = [r.arrays[STATE] for r in replies]
        new, norms = norm_bounded_mean(states, [r.num_examples for r in replies],
                                       {k: global_state[k] for k in states[0]}, self.options["max_norm"])
        bound = self.options["max_norm"] or sorted(norms)[len(norms) // 2]
        self._info = {"clipped": sum(n > bound for n in norms)}
        return merge(global_state, new)

    def round_info(self):
        return dict(self._info)
