"""Errors a user can act on.

`UserError` carries a one-line message that the CLI prints without a traceback (exit code 2).
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: unknown name, invalid value, missing file. One line, actionable."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message on one line so the CLI output stays one line.
        super().__init__(" ".join(str(message).split()))
