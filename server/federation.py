"""Before round 1 under ``flwr run``: the federation's SuperNodes against the config.

A simulation has every SuperNode from the start; in a deployment they connect over time, so the
ServerApp waits (up to ``wait_s``) for ``federated.num_clients`` of them. Then every SuperNode is
asked its partition id once (`server.strategy.GridTransport.nodes_by_partition`): partitions
``0..num_clients-1`` must each be held by exactly one SuperNode, or the run stops with a
`UserError` naming the SuperNode and the fix, instead of rounds that fail client by client.
"""

from __future__ import annotations

import time
from collections import Counter

from fedmllm.errors import UserError
from server.strategy import GridTransport

NODE_WAIT_S = 300.0  # deployment: how long the ServerApp waits for the SuperNodes to connect
_FIX = ('simulation: flwr run . --federation-config "num-supernodes={n}"; deployment: one flower-supernode '
        'per partition with --node-config "partition-id=K num-partitions={n}", K = 0..{last}; or set '
        'num-clients in the run config')


def await_federation(transport: GridTransport, num_clients: int, wait_s: float = NODE_WAIT_S,
                     poll_s: float = 1.0) -> None:
    """Wait for ``num_clients`` SuperNodes (not in a simulation), then check their partition ids."""
    grid, n = transport.grid, num_clients
    fix = _FIX.format(n=n, last=n - 1)
    simulated = hasattr(grid, "pull_interval")  # Flower's InMemoryGrid: all simulated SuperNodes exist
    deadline = time.monotonic() + (0.0 if simulated else wait_s)
    while len(list(grid.get_node_ids())) < n and time.monotonic() < deadline:
        time.sleep(poll_s)
    nodes = transport.nodes_by_partition()  # asks each SuperNode once, cached for the rounds
    for node, reason in sorted(transport.query_errors.items()):
        raise UserError(f"SuperNode {node} did not give its partition id: {reason}")
    for node, pid in sorted(transport.partitions.items()):
        if not 0 <= pid < n:
            raise UserError(f"SuperNode {node} has partition-id {pid}, outside 0..{n - 1} "
                            f"(federated.num_clients = {n}); {fix}")
    twice = [pid for pid, count in Counter(transport.partitions.values()).items() if count > 1]
    if twice:
        holders = sorted(node for node, pid in transport.partitions.items() if pid == twice[0])
        raise UserError(f"partition-id {twice[0]} is held by SuperNodes {holders}: give each its own; {fix}")
    missing = [pid for pid in range(n) if pid not in nodes]
    if missing:
        waited = "" if simulated else f" after waiting {wait_s:g} s"
        raise UserError(f"federated.num_clients = {n} but {len(nodes)} SuperNode(s) answered{waited} "
                        f"(no SuperNode for partition {missing[0]}); {fix}")
