"""Named crash points for the kill-and-resume tests: ``FEDMLLM_KILL_AT=<point>`` kills the process.

`crash_point` is called at the places a real run can die (mid-round, after aggregation, during
evaluation, halfway through writing a checkpoint, between systems); when the environment variable
names that point, the process sends itself SIGKILL: no cleanup, no flushed buffers, exactly what
``kill -9`` does. Unset (always, outside tests), it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "FEDMLLM_KILL_AT"


def crash_point(*parts: object) -> None:
    """Die here if ``FEDMLLM_KILL_AT`` equals ``"/".join(parts)`` (e.g. ``fedavg/2/aggregate``)."""
    target = os.environ.get(ENV)
    if target and target == "/".join(str(p) for p in parts):
        os.kill(os.getpid(), signal.SIGKILL)
