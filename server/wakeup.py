"""Wake-ups instead of polls between the simulation's threads (one process, one in-memory LinkState).

Flower's simulation moves messages through an in-memory LinkState that two loops poll: the
engine's dispatcher asks it for new instructions every 0.1 s, the ServerApp's `InMemoryGrid`
asks it for replies every ``pull_interval``. Short polls cut the wait but cost CPU all round
long (two threads waking 100 times a second held ~7-10% of a core in a 2-actor run, on the cores
the actors train on); long polls leave the actors idle. `stored` makes a LinkState method (e.g.
``store_message_res``) set an event after each call, so a loop can sleep until something was
stored (with a timeout: a missed or foreign store costs at most that wait, as a poll would).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.Lock()


def stored(state: Any, method: str) -> threading.Event:
    """The event ``state.<method>`` sets after every call (wrapped once per state and method)."""
    name = f"_fedmllm_stored_{method}"
    with _LOCK:
        event = getattr(state, name, None)
        if event is None:
            event, original = threading.Event(), getattr(state, method)

            @functools.wraps(original)
            def store(*args: Any, **kwargs: Any) -> Any:
                try:
                    return original(*args, **kwargs)
                finally:
                    event.set()

            setattr(state, method, store)
            setattr(state, name, event)
    return event


def wake_on_replies(grid: Any, longest_wait_s: float) -> None:
    """Make an `InMemoryGrid`'s reply loop sleep until a reply is stored (``longest_wait_s`` at
    most) instead of polling: its ``pull_messages`` waits for the LinkState's next
    ``store_message_res`` when nothing new has come, and its own sleep between pulls is 0.
    A grid without an in-memory state (``flwr run``'s gRPC grid) is left as it is."""
    state = getattr(grid, "state", None)
    if state is None or not hasattr(grid, "pull_interval") or not hasattr(state, "store_message_res"):
        return
    if getattr(grid, "_fedmllm_wakes", False):
        return
    event, pull = stored(state, "store_message_res"), grid.pull_messages

    def pull_messages(message_ids):
        message_ids = list(message_ids)
        event.clear()  # before pulling: a reply stored after this pull sets it again
        replies = list(pull(message_ids))
        if not replies and message_ids:
            event.wait(longest_wait_s)
        return replies

    grid.pull_messages, grid.pull_interval, grid._fedmllm_wakes = pull_messages, 0.0, True
