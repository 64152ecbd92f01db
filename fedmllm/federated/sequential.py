"""FedAvg in one process, without Flower, Ray or the round loop: the reference the simulation is
measured against.

Each round, every participating client (in partition-id order) trains from the global state with
`ClientRuntime.run_round`, the very call the ClientApp makes, with the same derived seeds and the
same round learning rate (lr × decay^(round−1), as `rounds.LoopSettings.lr` sets it); the new
global state is the example-weighted mean (`aggregate.weighted_average`, McMahan et al. 2017,
Alg. 1), written out here rather than taken from the ``fedavg`` algorithm, so that the test of the
algorithm against this loop means something. The overhead benchmark times the same work with and
without Flower.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from fedmllm.config import Config, method_options
from fedmllm.federated import protocol as P
from fedmllm.federated.aggregate import weighted_average
from fedmllm.federated.algorithms import GLOBAL, STATE, Payload
from fedmllm.federated.client import ClientRuntime
from fedmllm.federated.rounds import sampled_partitions


def default_runtime(cfg: Config) -> ClientRuntime:
    """A client runtime of ``cfg`` with its partition (all pools loaded: reference use only)."""
    from fedmllm.experiment import ExperimentData
    from fedmllm.federated.runtime import build_partition

    data = ExperimentData.load(cfg, parts=("train",))
    return ClientRuntime(cfg, build_partition(cfg, data), pools=data.train)


def run_sequential_fedavg(cfg: Config, rounds: Optional[int] = None,
                          clients: Optional[Sequence[int]] = None, *,
                          runtime: Optional[ClientRuntime] = None,
                          initial_state: Optional[dict] = None,
                          first_round: int = 1) -> tuple[dict[str, np.ndarray], list[dict]]:
    """FedAvg of ``cfg``'s clients for ``rounds`` rounds (default ``federated.rounds``),
    numbered from ``first_round`` (round numbers derive the seeds, the lr and the sample).

    ``clients``: the partition ids that train every round (default: the ones the simulation
    samples, `sampled_partitions`: all of them when ``clients_per_round`` is 0; fault injection,
    ``fail_clients``, is not applied: leave those out of ``clients`` to mirror it).
    ``runtime``: a `ClientRuntime` to reuse (default: `default_runtime`). ``initial_state``: the
    round-1 global state (default: `initial_global_state`); with ``first_round`` > 1, pass the
    global state after round ``first_round - 1``.

    Returns ``(final_state, history)``: the global state after the last round and one dict per
    round with ``round``, ``lr``, ``clients``, ``num_examples``, ``train_loss``, ``train_seconds``
    (per client, in order) and ``seconds`` (the whole round: training and averaging).
    """
    from fedmllm.federated.algorithms.base import as_arrays

    fed = cfg.federated
    rounds = fed.rounds if rounds is None else int(rounds)
    rt = runtime if runtime is not None else default_runtime(cfg)
    fixed = None if clients is None else sorted({int(c) for c in clients})
    if fixed == []:
        raise ValueError("run_sequential_fedavg: no clients")
    state = as_arrays(initial_state if initial_state is not None else initial_global_state(cfg))
    _, base_lr = method_options(cfg, fed.method)
    history = []
    for server_round in range(first_round, first_round + rounds):
        t0 = time.perf_counter()
        lr = base_lr * fed.lr_decay ** (server_round - 1)
        ids = fixed if fixed is not None else sampled_partitions(
            cfg.seed, fed.num_clients, fed.clients_per_round, server_round)
        config = {P.SERVER_ROUND: server_round, P.LR: lr, P.LOCAL_STEPS: fed.local_steps,
                  P.ALGORITHM: "fedavg"}
        results = [rt.run_round(pid, Payload({GLOBAL: state}, config), {}) for pid in ids]
        state = weighted_average([r.arrays[STATE] for r in results], [r.num_examples for r in results])
        history.append({
            "round": server_round, "lr": lr, "clients": ids,
            "num_examples": [r.num_examples for r in results],
            "train_loss": [r.train_loss for r in results],
            "train_seconds": [r.seconds for r in results],
            "seconds": time.perf_counter() - t0,
        })
    return state, history


def initial_global_state(cfg: Config) -> dict[str, np.ndarray]:
    """The round-1 global state: the method's state right after it is applied to a fresh base
    (what `ServerRuntime.initial_state` gives)."""
    from fedmllm.federated.algorithms.base import as_arrays
    from fedmllm.methods import apply_method
    from fedmllm.models import build_model

    bundle = build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
    options, _ = method_options(cfg, cfg.federated.method)
    model, method, _ = apply_method(bundle.model, cfg.federated.method, options, seed=cfg.seed)
    return as_arrays(method.get_state(model))
