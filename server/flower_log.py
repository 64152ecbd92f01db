"""How much of Flower's own log a fedmllm run shows: its warnings and errors, or (``--verbose``) its
INFO lines as well.

Flower logs through the ``flwr`` logger to its console handler (`flwr.supercore.logger`), at INFO
by default: strategy rounds, the simulation engine's start-up, client mods. fedmllm prints its own
round summaries, so by default the handler is at WARNING. Flower reads ``FLWR_LOG_LEVEL`` (its own
setting) when it is imported: in this process, and in every Ray actor, which inherits it from this
process through the local Ray the run starts (an attached cluster's workers keep their own
environment).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

ENV = "FLWR_LOG_LEVEL"
QUIET = "WARNING"
VERBOSE = "INFO"  # Flower's default
_LOGGER_MODULE = "flwr.supercore.logger"


def flower_level(verbose: bool) -> str:
    """A run's Flower level: WARNING; with ``verbose`` the user's ``FLWR_LOG_LEVEL``, else INFO."""
    if not verbose:
        return QUIET
    level = (os.environ.get(ENV) or VERBOSE).upper()
    return level if isinstance(logging.getLevelName(level), int) else VERBOSE


def _set_console_level(level: str) -> None:
    """Flower's console handlers in this process (if Flower is imported) to ``level``."""
    module = sys.modules.get(_LOGGER_MODULE)
    if module is None:
        return  # the import reads FLWR_LOG_LEVEL
    for handler in module.FLOWER_LOGGER.handlers:
        if isinstance(handler, module.ConsoleHandler):
            handler.setLevel(level)


@contextmanager
def flower_log(verbose: bool = False) -> Iterator[str]:
    """Within: Flower's console output here and in the Ray actors of the run is at `flower_level`
    (yielded); afterwards, the environment and the level it gives are as before."""
    level = flower_level(verbose)
    saved = os.environ.get(ENV)
    os.environ[ENV] = level
    _set_console_level(level)
    try:
        yield level
    finally:
        if saved is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = saved
        _set_console_level(flower_level(True))  # what Flower makes of the restored environment
