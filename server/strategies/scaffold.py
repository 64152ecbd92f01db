"""``scaffold``: SCAFFOLD (Karimireddy et al. 2020, Algorithm 1); Flower has none, so it is ours.

Messages (keys in `fedmllm.federated.protocol`):
- train instruction: ``arrays`` = x, ``config``, and a second ArrayRecord ``scaffold-c-global`` = c
  (same keys and shapes as x; zeros before the first aggregation);
- train reply: ``arrays`` = y_i, ``metrics``, and ``scaffold-dc`` = dc_i = c_i+ - c_i.
Client side (later, in ``clients/``): keep c_i in ``context.state`` (zeros at first), correct
every gradient by c - c_i (`aggregate.scaffold_correction`), and after K local steps of lr eta_l
compute c_i+ and dc_i with option II (`aggregate.scaffold_client_control`).
Server side: `aggregate.scaffold_server_update` with N = ``num_clients`` or, if unset, the number
of nodes connected when the round is configured. The model mean is weighted by ``num-examples``
like FedAvg (the paper's uniform mean when sizes are equal); the control mean is uniform.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlwrFedAvg

from fedmllm.federated import protocol as P
from fedmllm.federated.aggregate import scaffold_server_update
from fedmllm.federated.protocol import ReplyError, validate_reply
from server.strategies.base import (
    ValidatedReplies, numpy_to_record, record_to_numpy, reply_metrics)
from server.strategies.spec import StrategySpec, register_strategy


# How clients estimate their new control c_i+. "option2" is the paper's Option II,
# (x - y_i) / (K * eta_l), which assumes plain SGD local steps: with AdamW local training its unit is
# an Adam step (about 1 per coordinate), not a gradient, so c - c_i swamps the gradient and clients
# stop learning (seen on the embedded benchmark). "gradient" is the mean minibatch gradient along
# the local trajectory, a cheap stand-in for Option I (the gradient at x), in gradient units.
CONTROL_RULES = ("option2", "gradient")


class Scaffold(ValidatedReplies, FlwrFedAvg):
    """SCAFFOLD server: sends (x, c), receives (y_i, dc_i), updates x and c."""

    def __init__(self, *, server_lr: float, num_clients: Optional[int] = None, control: str = "option2",
                 **kwargs) -> None:
        if control not in CONTROL_RULES:
            raise ValueError(f"scaffold control must be one of {', '.join(CONTROL_RULES)}, got {control!r}")
        self.control = control
        if server_lr <= 0:
            raise ValueError(f"server_lr must be > 0, got {server_lr}")
        if num_clients is not None and (int(num_clients) != num_clients or num_clients < 1):
            raise ValueError(f"num_clients must be a positive integer, got {num_clients}")
        super().__init__(**kwargs)
        self.server_lr = float(server_lr)
        self.num_clients = None if num_clients is None else int(num_clients)
        self.c_global: Optional[dict[str, np.ndarray]] = None
        self.current_arrays: Optional[dict[str, np.ndarray]] = None
        self.total_clients = 0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """FedAvg's train messages plus the control variate c as a second ArrayRecord."""
        self.current_arrays = record_to_numpy(arrays)
        if self.c_global is None:
            self.c_global = {k: np.zeros_like(v) for k, v in self.current_arrays.items()}
        self.total_clients = self.num_clients or len(list(grid.get_node_ids()))
        config[P.SCAFFOLD_CONTROL] = self.control
        messages = list(super().configure_train(server_round, arrays, config, grid))
        c_record = numpy_to_record(self.c_global)
        for msg in messages:  # FedAvg shares one RecordDict between messages: setting is idempotent
            msg.content[P.SCAFFOLD_C_GLOBAL] = c_record
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        """x <- x + eta_g mean(y_i - x); c <- c + |S|/N mean(dc_i)."""
        ok, failed = self.prepare_replies(replies, train=True)
        self._observe(True, server_round, ok, failed)
        if not ok:
            return None, self.annotate(None, 0, len(failed))
        if self.current_arrays is None or self.c_global is None:
            raise RuntimeError("Scaffold.aggregate_train called before configure_train")
        states, dcs = [], []
        for msg in ok:
            who = f"reply from node {msg.metadata.src_node_id}"
            if P.SCAFFOLD_DC not in msg.content.array_records:
                raise ReplyError(f"{who} has no ArrayRecord {P.SCAFFOLD_DC!r} (SCAFFOLD client?)")
            validate_reply(msg.content[P.SCAFFOLD_DC], self.expected_shapes or {}, who=who + " dc")
            states.append(record_to_numpy(msg.content[self.arrayrecord_key]))
            dcs.append(record_to_numpy(msg.content[P.SCAFFOLD_DC]))
        weights = [float(reply_metrics(m.content)[self.weighted_by_key]) for m in ok]
        new_x, self.c_global = scaffold_server_update(
            self.current_arrays, self.c_global, states, dcs,
            self.total_clients, server_lr=self.server_lr, weights=weights)
        metrics = self.train_metrics_aggr_fn([m.content for m in ok], self.weighted_by_key)
        return numpy_to_record(new_x), self.annotate(metrics, len(ok), len(failed))


register_strategy(StrategySpec(
    "scaffold", Scaffold, {"server_lr": 1.0, "num_clients": None, "control": "option2"}, False,
    "SCAFFOLD, Karimireddy et al. 2020 Alg. 1 (ours; Flower has none)"))
