"""``fedavgm``: FedAvg with server momentum (Hsu et al. 2019, Sec. 3), `aggregate.fedavgm`:
v <- beta v + (x - avg); x <- x - server_lr v.

Equal to Flower's ``FedAvgM`` (tests/test_algorithms.py). Our default momentum is Hsu et al.'s 0.9
(Flower's default 0.0 would make it plain FedAvg). OpenFedLLM's "fedavgm" differs: it keeps an
exponential average m = beta m + (1 - beta) Delta and adds it without a server learning rate.
"""

from __future__ import annotations

from typing import Optional

from fedmllm.federated.aggregate import NDState, fedavgm, weighted_average
from fedmllm.federated.algorithms.base import STATE, Algorithm, merge, register_algorithm


@register_algorithm
class FedAvgM(Algorithm):
    """Server SGD with momentum on the pseudo-gradient x - avg."""

    name = "fedavgm"
    description = "FedAvg with server momentum, Hsu et al. 2019 Sec. 3"
    defaults = {"server_learning_rate": 1.0, "server_momentum": 0.9}

    def validate(self) -> None:
        lr, beta = self.options["server_learning_rate"], self.options["server_momentum"]
        if lr <= 0 or not 0.0 <= beta < 1.0:
            raise ValueError("need server_learning_rate > 0 and 0 <= server_momentum < 1, got "
                             f"{lr}, {beta}")

    def reset(self) -> None:
        self.momentum: Optional[NDState] = None

    def aggregate(self, server_round, global_state, replies):
        keys = list(replies[0].arrays[STATE])
        avg = weighted_average([r.arrays[STATE] for r in replies], [r.num_examples for r in replies])
        new, self.momentum = fedavgm({k: global_state[k] for k in keys}, avg, self.momentum,
                                     server_lr=self.options["server_learning_rate"],
                                     server_momentum=self.options["server_momentum"])
        return merge(global_state, new)

    def state_dict(self):
        return {"arrays": {"momentum": dict(self.momentum or {})}, "values": {}}

    def load_state_dict(self, state):
        self.momentum = dict(state["arrays"]["momentum"]) or None
