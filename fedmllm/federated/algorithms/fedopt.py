"""Shared base of ``fedadagrad``, ``fedadam``, ``fedyogi``: Reddi et al. 2021, Algorithm 2
(`aggregate.fedopt`), over the example-weighted average of the client states.

Why not Flower's FedAdagrad / FedAdam / FedYogi (flwr/serverapp/strategy/fedadam.py etc.):
Flower's FedAdam multiplies eta by the Adam bias correction sqrt(1 - beta2^(t+1)) /
(1 - beta1^(t+1)), which Algorithm 2 does not have; all three start from v_{-1} = 0 where
Algorithm 2 requires v_{-1} >= tau^2 (we use tau^2 unless ``v_init`` says otherwise; with
``v_init = 0`` our FedAdagrad / FedYogi equal Flower's: tests/test_algorithms.py).
"""

from __future__ import annotations

from typing import ClassVar, Optional

from fedmllm.federated.aggregate import NDState, fedopt, weighted_average
from fedmllm.federated.algorithms.base import STATE, Algorithm, merge

FEDOPT_DEFAULTS = {"eta": 1e-2, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3, "v_init": None}


class ReddiFedOpt(Algorithm):
    """Server-side adaptive optimizer; ``rule`` is a key of `aggregate.SECOND_MOMENT`."""

    rule: ClassVar[str] = ""
    defaults = dict(FEDOPT_DEFAULTS)

    def validate(self) -> None:
        o = self.options
        if o["eta"] <= 0 or o["tau"] <= 0 or not (0 <= o["beta_1"] < 1 and 0 <= o["beta_2"] < 1):
            raise ValueError(f"need eta > 0, tau > 0, 0 <= beta_1, beta_2 < 1; got eta={o['eta']}, "
                             f"tau={o['tau']}, beta_1={o['beta_1']}, beta_2={o['beta_2']}")
        if o["v_init"] is not None and o["v_init"] < 0:
            raise ValueError(f"v_init must be >= 0, got {o['v_init']}")

    def reset(self) -> None:
        self.m: Optional[NDState] = None
        self.v: Optional[NDState] = None

    def resolved_options(self):
        o = self.options
        return {**o, "v_init": float(o["tau"]) ** 2 if o["v_init"] is None else float(o["v_init"])}

    def aggregate(self, server_round, global_state, replies):
        keys = list(replies[0].arrays[STATE])
        avg = weighted_average([r.arrays[STATE] for r in replies], [r.num_examples for r in replies])
        o = self.resolved_options()
        new, self.m, self.v = fedopt(self.rule, {k: global_state[k] for k in keys}, avg, self.m,
                                     self.v, eta=o["eta"], beta_1=o["beta_1"], beta_2=o["beta_2"],
                                     tau=o["tau"], v_init=o["v_init"])
        return merge(global_state, new)

    def state_dict(self):
        return {"arrays": {"m": dict(self.m or {}), "v": dict(self.v or {})}, "values": {}}

    def load_state_dict(self, state):
        self.m = dict(state["arrays"]["m"]) or None
        self.v = dict(state["arrays"]["v"]) or None
