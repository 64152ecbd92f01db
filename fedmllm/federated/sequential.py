"""FedAvg in one process, without Flower or Ray: the reference the simulation is measured against.

Each round, every participating client (in partition-id order) trains from the global state with
`ClientRuntime.train`, the very call the Flower ClientApp makes, with the same derived seeds and
the same round learning rate (lr × decay^(round−1), as `server.instrument.Instrumented` sets it);
the new global state is the example-weighted mean (`aggregate.weighted_average`, McMahan et al.
2017, Alg. 1). Replies are averaged in partition order, as the Flower strategies do, so a Ray
simulation of the same config gives the same states to float rounding (tests/test_federated.py)
and the overhead benchmark can time the same work with and without Flower.

"To float rounding" is per round: Flower's FedAvg accumulates the weighted sum in float32,
`weighted_average` in float64, so a global state may differ in the last bit. AdamW turns such a
difference into up to lr/eps (1e5) times more wherever a gradient is near zero, so after several
rounds the two agree exactly only when the weights make both sums exact (equal client sizes, one
client per round); otherwise compare round by round (``first_round``).
"""

from __future__ import annotations

import random
import time
from typing import Optional, Sequence

import torch

from fedmllm.config import Config, dumps, method_options
from fedmllm.federated.aggregate import weighted_average
from fedmllm.federated.runtime import ClientRuntime, client_runtime, sampling_seed


def run_sequential_fedavg(cfg: Config, rounds: Optional[int] = None,
                          clients: Optional[Sequence[int]] = None, *,
                          runtime: Optional[ClientRuntime] = None,
                          initial_state: Optional[dict[str, torch.Tensor]] = None,
                          first_round: int = 1) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """FedAvg of ``cfg``'s clients for ``rounds`` rounds (default ``federated.rounds``),
    numbered from ``first_round`` (round numbers derive the seeds, the lr and the sample).

    ``clients``: the partition ids that train every round (default: the ones the simulation
    samples, `sampled_partitions`: all of them when ``clients_per_round`` is 0; fault injection,
    ``fail_clients``, is not applied: leave those out of ``clients`` to mirror it).
    ``runtime``: a `ClientRuntime` to reuse (default: the process-wide cached one for ``cfg``,
    the same object the ClientApp uses in this process). ``initial_state``: the round-1 global
    state (default: `initial_global_state`, the server's initial state); with ``first_round``
    > 1, pass the global state the simulation had after round ``first_round - 1``.

    Returns ``(final_state, history)``: the global state after the last round (float tensors of
    the state's dtype) and one dict per round with ``round``, ``lr``, ``clients``,
    ``num_examples``, ``train_loss``, ``train_seconds`` (per client, in order) and ``seconds``
    (the whole round: training and averaging).
    """
    fed = cfg.federated
    rounds = fed.rounds if rounds is None else int(rounds)
    rt = runtime if runtime is not None else client_runtime(dumps(cfg))
    fixed = None if clients is None else sorted({int(c) for c in clients})
    if fixed == []:
        raise ValueError("run_sequential_fedavg: no clients")
    state = initial_state if initial_state is not None else initial_global_state(rt.cfg)
    _, base_lr = method_options(cfg, fed.method)
    history = []
    for server_round in range(first_round, first_round + rounds):
        t0 = time.perf_counter()
        lr = base_lr * fed.lr_decay ** (server_round - 1)
        ids = fixed if fixed is not None else sampled_partitions(cfg, server_round)
        results = [rt.train(pid, state, server_round, lr=lr, steps=fed.local_steps) for pid in ids]
        avg = weighted_average([r.state for r in results], [r.num_examples for r in results])
        state = {k: torch.from_numpy(v) for k, v in avg.items()}
        history.append({
            "round": server_round, "lr": lr, "clients": ids,
            "num_examples": [r.num_examples for r in results],
            "train_loss": [r.train_loss for r in results],
            "train_seconds": [r.seconds for r in results],
            "seconds": time.perf_counter() - t0,
        })
    return state, history


def sampled_partitions(cfg: Config, server_round: int) -> list[int]:
    """The partitions the simulation trains in ``server_round``, sorted.

    As `server.instrument.Instrumented` and Flower's FedAvg sample: ``random`` seeded with
    `sampling_seed`, then ``random.sample`` of ``clients_per_round`` nodes listed in partition
    order (flwr ``strategy_utils.sample_nodes``); all partitions when ``clients_per_round`` is 0.
    """
    fed = cfg.federated
    if not fed.clients_per_round or fed.clients_per_round >= fed.num_clients:
        return list(range(fed.num_clients))
    rng = random.Random(sampling_seed(cfg.seed, server_round))
    return sorted(rng.sample(range(fed.num_clients), fed.clients_per_round))


def initial_global_state(cfg: Config) -> dict[str, torch.Tensor]:
    """The round-1 global state: the method's state right after it is applied to a fresh base
    (what `ServerRuntime.initial_state` gives; a cached runtime may have trained since)."""
    from fedmllm.methods import apply_method
    from fedmllm.models import build_model

    bundle = build_model(cfg.model.name, pretrained=cfg.model.pretrained, seed=cfg.seed)
    options, _ = method_options(cfg, cfg.federated.method)
    model, method, _ = apply_method(bundle.model, cfg.federated.method, options)
    return method.get_state(model)
