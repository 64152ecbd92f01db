"""Flower's simulation hands instructions to its Ray actors as soon as the ServerApp stores them.

Flower's simulation engine (``flwr.server.superlink.fleet.vce.vce_api``) moves the ServerApp's
pushed messages to its backend workers from a thread that polls the LinkState every 0.1 s: each
round's instructions then wait 0.05 s on average (0.064 s measured, the largest part of a round's
Flower overhead at 0.1 s of training per client). `fast_dispatch` swaps in the same loop, woken
by the LinkState's ``store_message_ins`` (`server.wakeup.stored`) instead: no wait for the
instructions, and no CPU between rounds (a 0.01 s poll, the previous fix, kept a thread waking
100 times a second on the cores the actors train on). After a wake-up or a poll that found
messages it polls again at once; since one poll asks every simulated node (O(nodes x pending
messages)), it then waits so that polling takes at most a tenth of the time (e.g. with thousands
of nodes). Flower's own function comes back after the simulation.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from queue import Queue
from typing import Iterator

FLOWER_POLL_S = 0.1  # Flower's fixed wait: the longest, also between stores


def add_messages_to_queue(state, queue: Queue, nodes_mapping, f_stop: threading.Event) -> None:
    """Flower's ``vce_api.add_messages_to_queue`` (flwr 1.4x), woken by stored instructions."""
    from server.wakeup import stored

    pushed = stored(state, "store_message_ins")
    while not f_stop.is_set():
        pushed.clear()  # before polling: an instruction stored after the poll sets it again
        t0, found = time.perf_counter(), 0
        for node_id in nodes_mapping.keys():
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
                found += 1
        polled = time.perf_counter() - t0
        if found:  # more may be pending (one per node per poll)
            f_stop.wait(poll_wait(polled))
        else:  # nothing pending: sleep until the next store (or stop, or Flower's 0.1 s)
            pushed.wait(FLOWER_POLL_S)


def poll_wait(polled_s: float) -> float:
    """Seconds to wait after a poll that took ``polled_s`` and found messages: polling takes at
    most a tenth of the time, and `FLOWER_POLL_S` is the longest wait."""
    return min(FLOWER_POLL_S, 9 * polled_s)


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
