"""Secure aggregation for the round loop: one round of Flower's SecAgg+ over a Grid.

`SecAggTransport` is a `GridTransport` (same node addressing, same evaluate messages) whose
``secure_exchange`` runs one round of SecAgg+ (Bell et al., CCS 2020) with the sampled partitions
and hands the round loop only the example-weighted mean of their shared states
(`fedmllm.federated.rounds.SecureTransport`).

From Flower (flwr 1.42), unchanged: the protocol. `SecAggPlusWorkflow`'s four stages (setup,
share keys, collect masked vectors, unmask: key agreement, Shamir shares, pairwise and private
masks, dropout recovery, quantization, dequantization and the weighted mean) are called stage by
stage with the `LegacyContext` and legacy ``flwr.server.strategy.Strategy`` they require (SecAgg+
exists only on that path in 1.42); the client side is Flower's ``secaggplus_mod`` (clients/secagg.py).
Ours: (1) `_Sampled`, the legacy strategy that gives the workflow the sampled partitions' nodes and
keeps the unmasked mean the workflow hands its ``aggregate_fit``; (2) after the setup stage each
node's train instruction (a legacy ``FitIns``) is replaced by our own payload (`encode_payload`),
so a client receives exactly what GridTransport sends it, plus Flower's ``secaggplus_configs``
record; (3) the flat array list <-> named state (sorted keys of what the algorithm expects; clients
send flat float64 arrays, clients/secagg.py), reshaped and cast to the global state's dtypes;
(4) failures by partition and the bytes of all four stages (every record both ways: arrays, keys,
ciphertexts, shares, the masked int64 vectors), metered on the grid; (5) the setup stage's
neighbour shuffle, which Flower draws from Python's global ``random``, seeded per round and the
global state restored; (6) two fixes of Flower 1.42 between stages, state only, no crypto:
clients that dropped out before completing the share-keys stage are forgotten
(`_forget_early_dropouts`; Flower would make every other client fail in the unmask stage), and
0-d arrays are sent flat (Flower's unmask stage leaves them unscaled); (7) under user-level DP
(payloads carry ``protocol.DP_CLIP``) every client weighs 1, the uniform mean
`fedmllm.federated.privacy` needs (a workflow with max_weight 1).

As in Flower, the server still sees each client's example count and train metrics (the legacy
``FitRes`` beside the masked vector), never its state. Precision: client i's weight is
d_i = round(n_i / max_weight * T) / T and d_i x_i is stochastically rounded to a step 2c / T
(c: clipping range, T: quantization range); tests/test_secagg.py derives the error bound.
``federated.round_timeout_s`` (if set) bounds each of the four stages; a client that misses one drops out.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Callable, Optional, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.common import FitIns, parameters_to_ndarrays
from flwr.server import ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow, WorkflowState

from fedmllm.errors import UserError
from fedmllm.experiment import derive_seed
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms import Payload, Reply
from fedmllm.federated.algorithms.base import GLOBAL, STATE
from fedmllm.federated.rounds import INVALID, TIMEOUT
from server.records import encode_payload
from server.strategy import GridTransport, error_summary


def record_bytes(content: RecordDict) -> int:
    """Bytes of every record of a message: arrays, and config / metric values (public keys,
    ciphertexts, masked vectors; numbers as 8 bytes, as Flower's ``count_bytes`` counts them, which
    itself raises on an empty string)."""
    def size(value) -> int:
        if isinstance(value, (list, tuple)):
            return sum(size(v) for v in value)
        return len(value) if isinstance(value, (bytes, str)) else 1 if isinstance(value, bool) else 8

    return sum(r.count_bytes() if isinstance(r, ArrayRecord) else sum(size(v) for v in r.values())
               for r in content.values())


class _Sampled(Strategy):
    """The legacy strategy the workflow drives: the sampled nodes, then the unmasked mean."""

    def __init__(self, proxies: Sequence[GridClientProxy]):
        self.proxies, self.results = list(proxies), []

    def configure_fit(self, server_round, parameters, client_manager):  # noqa: D102
        return [(proxy, FitIns(parameters, {})) for proxy in self.proxies]

    def aggregate_fit(self, server_round, results, failures):  # noqa: D102
        self.results = list(results)  # every FitRes carries the same unmasked mean
        return (self.results[0][1].parameters if self.results else None), {}

    def initialize_parameters(self, client_manager):  # noqa: D102
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):  # noqa: D102
        return []

    def aggregate_evaluate(self, server_round, results, failures):  # noqa: D102
        return None, {}

    def evaluate(self, server_round, parameters):  # noqa: D102
        return None


class _Metered:
    """The grid as the workflow sees it: bytes of all records both ways, and each node's first
    error (or missing reply) with the stage it happened in."""

    def __init__(self, grid):
        self.grid, self.stage, self.down, self.up = grid, "", 0, 0
        self.errors: dict[int, str] = {}

    def send_and_receive(self, messages, *, timeout=None):  # noqa: D102
        messages = list(messages)
        self.down += sum(record_bytes(m.content) for m in messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for m in replies:
            if m.has_error():
                self.errors.setdefault(m.metadata.src_node_id,
                                       f"SecAgg+ {self.stage}: {error_summary(str(m.error.reason))}")
            else:
                self.up += record_bytes(m.content)
        answered = {m.metadata.src_node_id for m in replies}
        for m in messages:
            if m.metadata.dst_node_id not in answered:
                self.errors.setdefault(m.metadata.dst_node_id, f"{TIMEOUT}: no reply in SecAgg+ {self.stage}")
        return replies


@contextmanager
def _seeded_random(seed: Optional[int]):
    """Python's global ``random`` seeded for the block and then restored (None: untouched)."""
    if seed is None:
        yield
        return
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


class SecAggTransport(GridTransport):
    """The round loop's `SecureTransport`: each round one SecAgg+ protocol run over the grid."""

    secure = True

    def __init__(self, grid, *, num_shares: float = 1.0, reconstruction_threshold: float = 0.67,
                 clipping_range: float = 8.0, quantization_range: int = 2 ** 22, max_weight: float = 1000.0,
                 seed: int = 0, timeout: float = 3600.0, round_timeout: float = 0.0,
                 log: Optional[Callable[[dict], None]] = None):
        """``num_shares``: fraction of the round's clients each client's secrets are shared with;
        ``reconstruction_threshold``: fraction of those shares that rebuild a secret (Flower's float
        forms of both); ``max_weight``: the largest example count a client may weigh in with;
        ``round_timeout`` > 0 bounds each of the four stages (else ``timeout``)."""
        super().__init__(grid, timeout=timeout, round_timeout=round_timeout, log=log)
        self.seed = seed
        # Under user-level DP (payloads carry a clipping norm) every client weighs 1: max_weight 1.
        self.workflows = {uniform: SecAggPlusWorkflow(
            float(num_shares), float(reconstruction_threshold), max_weight=1.0 if uniform else float(max_weight),
            clipping_range=float(clipping_range), quantization_range=int(quantization_range),
            timeout=self.round_timeout or timeout) for uniform in (False, True)}

    @classmethod
    def from_config(cls, grid, cfg, *, sizes: Sequence[int], log=None) -> "SecAggTransport":
        """The transport of ``cfg.federated.secagg_*``; ``sizes``: each partition's training
        examples (max_weight 0 means the largest of them)."""
        fed = cfg.federated
        return cls(grid, num_shares=fed.secagg_num_shares, reconstruction_threshold=fed.secagg_reconstruction_threshold,
                   clipping_range=fed.secagg_clipping_range, quantization_range=fed.secagg_quantization_range,
                   max_weight=fed.secagg_max_weight or float(max(sizes)), seed=cfg.seed,
                   round_timeout=fed.round_timeout_s, log=log)

    def secure_exchange(self, server_round: int, payloads: dict[int, Payload], expected: dict[int, Any]
                        ) -> tuple[Optional[Reply], dict[int, str]]:
        """One SecAgg+ round; (the aggregate as one reply, or None; failures by partition)."""
        shapes = _common_shapes(expected)
        nodes = self.nodes_by_partition()
        failures = {pid: "no connected node has this partition id" for pid in payloads if pid not in nodes}
        partition = {nodes[pid]: pid for pid in payloads if pid in nodes}
        strategy = _Sampled([GridClientProxy(node, self.grid, 0) for node in sorted(partition)])
        context = LegacyContext(Context(0, 0, {}, RecordDict(), {}), ServerConfig(num_rounds=1), strategy)
        for proxy in strategy.proxies:
            context.client_manager.register(proxy)
        context.state[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
        context.state[MAIN_PARAMS_RECORD] = ArrayRecord()
        uniform = any(P.DP_CLIP in p.config for p in payloads.values())
        grid, state, wf = _Metered(self.grid), WorkflowState(), self.workflows[uniform]
        for grid.stage, stage in (("setup", wf.setup_stage), ("share keys", wf.share_keys_stage),
                                  ("collect masked vectors", wf.collect_masked_vectors_stage),
                                  ("unmask", wf.unmask_stage)):
            setup = stage == wf.setup_stage
            with _seeded_random(derive_seed(self.seed, "secagg", server_round) if setup else None):
                if not stage(grid, context, state):
                    break
            if setup:  # each node's train instruction: our payload instead of the legacy FitIns
                state.nid_to_fitins = {node: encode_payload(payloads[partition[node]]) for node in state.nid_to_fitins}
            elif stage == wf.share_keys_stage:
                _forget_early_dropouts(state)
        done = {partition[proxy.node_id]: fitres for proxy, fitres in strategy.results}
        halted = (f"SecAgg+ stopped in stage {grid.stage}: too few clients left for the reconstruction "
                  f"threshold ({state.threshold} shares)")
        for node, pid in partition.items():
            if pid not in done:
                failures[pid] = grid.errors.get(node, halted)
        if not done:
            return None, failures
        flat = parameters_to_ndarrays(next(iter(done.values())).parameters)
        dtypes = {k: v.dtype for k, v in payloads[next(iter(done))].arrays.get(GLOBAL, {}).items()}
        try:
            mean = _unflatten(flat, shapes, dtypes)
        except P.ReplyError as e:
            return None, {**failures, **{pid: f"{INVALID}: {e}" for pid in done}}
        fitres = [done[pid] for pid in sorted(done)]
        metrics = P.reduce_metrics([dict(f.metrics) for f in fitres], [f.num_examples for f in fitres])
        total = sum(f.num_examples for f in fitres)
        metrics.update({P.NUM_EXAMPLES: total, P.NUM_CLIENTS: len(fitres), P.BYTES_IN: grid.down,
                        P.BYTES_OUT: grid.up})
        return Reply(-1, total, {STATE: mean}, metrics), failures


def _forget_early_dropouts(state: WorkflowState) -> None:
    """After the share-keys stage, forget the clients that dropped out before completing it: nobody
    holds shares of their secrets and nobody masked with them, yet Flower 1.42's unmask stage lists
    them as dead and asks the others for their shares, and every other client fails (KeyError).
    Only the clients left take part from here on, in every neighbourhood."""
    alive = set(state.active_node_ids)
    state.sampled_node_ids = alive
    state.nid_to_neighbours = {n: nb & alive for n, nb in state.nid_to_neighbours.items() if n in alive}


def _common_shapes(expected: dict[int, Any]) -> dict[str, tuple[int, ...]]:
    """The one shared state every client sends (SecAgg+ sums one vector per client)."""
    plans = list(expected.values())
    if any(set(plan) != {STATE} or plan[STATE] != plans[0][STATE] for plan in plans):
        raise UserError("federated.secagg sums one state per client: every client must send the same "
                        f"{STATE!r} keys and shapes (equal LoRA ranks, a FedAvg-family strategy)")
    return {k: tuple(v) for k, v in plans[0][STATE].items()} if plans else {}


def _unflatten(flat: list, shapes: dict[str, tuple[int, ...]], dtypes: dict) -> dict[str, np.ndarray]:
    """The unmasked flat arrays (sorted keys; clients flatten every array because Flower's unmask
    stage leaves a 0-d array unscaled: its in-place loop rebinds numpy scalars) as named arrays of
    the expected shapes and the global state's dtypes; `ReplyError` unless they fit and are finite."""
    if len(flat) != len(shapes):
        raise P.ReplyError(f"SecAgg+ aggregate has {len(flat)} arrays, expected {len(shapes)}")
    out = {}
    for (key, shape), a in zip(sorted(shapes.items()), flat):
        if a.size != int(np.prod(shape)):
            raise P.ReplyError(f"SecAgg+ aggregate: {key} has {a.size} values, expected shape {shape}")
        if not np.isfinite(a).all():
            raise P.ReplyError(f"SecAgg+ aggregate has non-finite values in {key}")
        out[key] = np.asarray(a, dtype=dtypes.get(key, np.float32)).reshape(shape)
    return out
