"""Shared base of ``fedadagrad``, ``fedadam``, ``fedyogi``: Reddi et al. 2021, Algorithm 2.

Why not Flower's FedAdagrad / FedAdam / FedYogi (read in flwr 1.41 serverapp/strategy/):
- Flower's FedAdam multiplies eta by the Adam bias correction
  sqrt(1 - beta2^(t+1)) / (1 - beta1^(t+1)); Algorithm 2 has no bias correction.
- All three start from v_{-1} = 0; Algorithm 2 requires v_{-1} >= tau^2 (we use tau^2 unless
  ``v_init`` says otherwise; with ``v_init=0`` our FedAdagrad / FedYogi equal Flower's, which
  tests/test_strategies.py checks).
So the update is `fedmllm.federated.aggregate.fedopt`; Flower's FedOpt is kept for its
bookkeeping (it remembers the arrays sent in ``configure_train`` as ``current_arrays``).
"""

from __future__ import annotations

from typing import Iterable, Optional

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy.fedopt import FedOpt

from fedmllm.federated.aggregate import fedopt
from server.strategies.base import ValidatedReplies, numpy_to_record, record_to_numpy

FEDOPT_OPTIONS = {"eta": 1e-2, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3, "v_init": None}


class ReddiFedOpt(ValidatedReplies, FedOpt):
    """Server-side adaptive optimizer over the FedAvg-weighted client average."""

    rule = ""  # key of `fedmllm.federated.aggregate.SECOND_MOMENT`, set by subclasses

    def __init__(self, *, eta: float, beta_1: float, beta_2: float, tau: float,
                 v_init: Optional[float] = None, **kwargs) -> None:
        if eta <= 0 or tau <= 0 or not (0 <= beta_1 < 1 and 0 <= beta_2 < 1):
            raise ValueError(f"need eta > 0, tau > 0, 0 <= beta_1, beta_2 < 1; got eta={eta}, "
                             f"tau={tau}, beta_1={beta_1}, beta_2={beta_2}")
        if v_init is not None and v_init < 0:
            raise ValueError(f"v_init must be >= 0, got {v_init}")
        super().__init__(eta=float(eta), beta_1=float(beta_1), beta_2=float(beta_2),
                         tau=float(tau), **kwargs)
        self.v_init = v_init

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        """FedAvg average of the replies, then one `fedopt` step from the arrays sent."""
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        new, self.m_t, self.v_t = fedopt(
            self.rule, self.current_arrays, record_to_numpy(arrays), self.m_t, self.v_t,
            eta=self.eta, beta_1=self.beta_1, beta_2=self.beta_2, tau=self.tau,
            v_init=self.v_init)
        return numpy_to_record(new), metrics
