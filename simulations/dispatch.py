"""Flower's simulation hands instructions to its Ray actors sooner (0.01 s polls instead of 0.1 s).

Flower's simulation engine (``flwr.server.superlink.fleet.vce.vce_api``) moves the ServerApp's
pushed messages to its backend workers from a thread that polls the LinkState every 0.1 s: each
round's instructions then wait 0.05 s on average (0.064 s measured, the largest part of a round's
Flower overhead at 0.1 s of training per client). `fast_dispatch` swaps in the same loop with a
0.01 s poll; since one poll asks every simulated node (O(nodes x pending messages)), the wait
grows so that polling takes at most a tenth of the time (Flower's 0.1 s at most, e.g. with
thousands of nodes). Flower's own function comes back after the simulation.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from queue import Queue
from typing import Iterator

DISPATCH_POLL_S = 0.01  # shortest wait between two polls
FLOWER_POLL_S = 0.1  # Flower's fixed wait, the longest


def add_messages_to_queue(state, queue: Queue, nodes_mapping, f_stop: threading.Event) -> None:
    """Flower's ``vce_api.add_messages_to_queue`` (flwr 1.4x), with the adaptive wait."""
    while not f_stop.is_set():
        t0 = time.perf_counter()
        for node_id in nodes_mapping.keys():
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        f_stop.wait(poll_wait(time.perf_counter() - t0))


def poll_wait(polled_s: float) -> float:
    """Seconds to wait after a poll that took ``polled_s``: `DISPATCH_POLL_S`, longer when
    polling would otherwise take more than a tenth of the time, `FLOWER_POLL_S` at most."""
    return min(FLOWER_POLL_S, max(DISPATCH_POLL_S, 9 * polled_s))


@contextmanager
def fast_dispatch() -> Iterator[None]:
    """Within: Flower's simulation polls for instructions with `add_messages_to_queue` (left as
    it is if this Flower has no such function, e.g. another engine layout)."""
    from flwr.server.superlink.fleet.vce import vce_api

    original = getattr(vce_api, "add_messages_to_queue", None)
    if original is None:
        yield
        return
    vce_api.add_messages_to_queue = add_messages_to_queue
    try:
        yield
    finally:
        vce_api.add_messages_to_queue = original
