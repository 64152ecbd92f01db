"""``scaffold``: SCAFFOLD (Karimireddy et al. 2020, Algorithm 1); Flower has none.

Payload: ``global`` = x and ``scaffold-c`` = c (same keys and shapes; zeros before the first
aggregation), config ``scaffold-control``. Client: keeps c_i in its local state (zeros at first),
corrects every gradient by c - c_i (`fedmllm.training.hooks.ControlVariate`, Alg. 1 line 10), and
after K local steps computes c_i+ (``option2``: Alg. 1 line 12, eq. 4; ``gradient``: the mean
local minibatch gradient, see `CONTROL_RULES`); replies ``state`` = y_i and ``scaffold-dc`` =
dc_i = c_i+ - c_i. Server: `aggregate.scaffold_server_update` (lines 16-17) with N = the
experiment's number of partitions unless ``num_clients`` says otherwise; the model mean is
weighted by examples like FedAvg (the paper's uniform mean for equal sizes), the control mean is
uniform, so c stays the mean of all N c_i.
"""

from __future__ import annotations

import numpy as np

from fedmllm.federated.aggregate import scaffold_server_update
from fedmllm.federated.algorithms.base import (
    GLOBAL, STATE, Algorithm, Payload, as_arrays, as_tensors, merge, register_algorithm)
from fedmllm.training.hooks import ControlVariate, scaffold_control_update

C_GLOBAL = "scaffold-c"  # payload record: the server control c
DC = "scaffold-dc"  # reply record: dc_i
C_LOCAL = "scaffold-c"  # local-state group: this client's c_i
CONTROL = "scaffold-control"  # config key: how the client estimates c_i+

# "option2" is the paper's Option II, (x - y_i) / (K eta_l), which assumes plain SGD local steps:
# with AdamW local training its unit is an Adam step (about 1 per coordinate), not a gradient, so
# c - c_i swamps the gradient and clients stop learning (seen on the embedded benchmark).
# "gradient" is the mean minibatch gradient along the local trajectory, a cheap stand-in for
# Option I (the gradient at x), in gradient units.
CONTROL_RULES = ("option2", "gradient")


@register_algorithm
class Scaffold(Algorithm):
    """SCAFFOLD server and client halves."""

    name = "scaffold"
    description = "SCAFFOLD, Karimireddy et al. 2020 Alg. 1 (ours; Flower has none)"
    defaults = {"server_lr": 1.0, "num_clients": None, "control": "option2"}

    def validate(self) -> None:
        o = self.options
        if o["control"] not in CONTROL_RULES:
            raise ValueError(f"control must be one of {', '.join(CONTROL_RULES)}, got {o['control']!r}")
        if o["server_lr"] <= 0:
            raise ValueError(f"server_lr must be > 0, got {o['server_lr']}")
        n = o["num_clients"]
        if n is not None and (int(n) != n or n < 1):
            raise ValueError(f"num_clients must be a positive integer, got {n}")

    def reset(self) -> None:
        self.c_global: dict[str, np.ndarray] = {}

    def resolved_options(self):
        n = self.options["num_clients"]
        return {**self.options, "num_clients": int(n) if n is not None else self.num_clients}

    def init(self, global_state):
        self.c_global = {k: np.zeros_like(v) for k, v in global_state.items()}

    def client_config(self, server_round):
        return {CONTROL: self.options["control"]}

    def configure(self, server_round, client, global_state):
        payload = super().configure(server_round, client, global_state)
        payload.arrays[C_GLOBAL] = {k: self.c_global[k] for k in payload.arrays[GLOBAL]}
        return payload

    def expected(self, server_round, client, global_state):
        shapes = super().expected(server_round, client, global_state)
        return {**shapes, DC: dict(shapes[STATE])}

    def aggregate(self, server_round, global_state, replies):
        """x <- x + eta_g mean(y_i - x); c <- c + |S|/N mean(dc_i)."""
        n = self.resolved_options()["num_clients"]
        new_x, self.c_global = scaffold_server_update(
            global_state, self.c_global, [r.arrays[STATE] for r in replies],
            [r.arrays[DC] for r in replies], n, server_lr=float(self.options["server_lr"]),
            weights=[r.num_examples for r in replies])
        return merge(global_state, new_x)

    def state_dict(self):
        return {"arrays": {C_GLOBAL: dict(self.c_global)}, "values": {}}

    def load_state_dict(self, state):
        self.c_global = dict(state["arrays"][C_GLOBAL])

    # -- client half ------------------------------------------------------------------------
    def hooks(self, payload: Payload, local_state, method, state):
        c_global = as_tensors(payload.arrays[C_GLOBAL])
        c_local = _local_control(local_state, c_global)
        return [ControlVariate(c_global, c_local, method,
                               record_gradients=payload.config[CONTROL] == "gradient")]

    def finish(self, payload, local_state, plan, result):
        reply, new_local = super().finish(payload, local_state, plan, result)
        hook = next(h for h in result.hooks if isinstance(h, ControlVariate))
        c_local = hook.c_local
        if payload.config[CONTROL] == "gradient":
            c_new = hook.mean_gradients()
        else:
            c_new = scaffold_control_update(c_local, hook.c_global, as_tensors(payload.arrays[GLOBAL]),
                                            as_tensors(reply[STATE]), result.steps, result.lr)
        reply[DC] = as_arrays({k: c_new[k] - c_local[k].float() for k in reply[STATE]})
        new_local[C_LOCAL] = as_arrays(c_new)
        return reply, new_local


def _local_control(local_state, c_global):
    import torch

    if C_LOCAL in local_state:
        return as_tensors(local_state[C_LOCAL])
    return {k: torch.zeros_like(v) for k, v in c_global.items()}
