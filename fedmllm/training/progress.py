"""Progress of one `train_local` call: steps done / total, loss and s/step.

On a terminal it is one tqdm line that updates in place (cleared at the end: the caller prints
its own summary). Elsewhere (a log file, a pipe, a captured test) a bar would write a
carriage-return frame every tenth of a second into the log, so it prints one plain line at each
quarter of the steps instead: a few lines per call, whatever the number of steps.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Optional, TextIO

import torch
from tqdm.auto import tqdm

QUARTERS = (0.25, 0.5, 0.75)  # non-terminal: a line when these fractions of the steps are done
LOSS_REFRESH_S = 0.5  # terminal: read the loss (a device sync on an accelerator) at most this often


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def line_steps(total: int, first: int = 0) -> list[int]:
    """The step counts (1-based, > ``first``, < ``total``) after which a non-terminal line is printed."""
    return sorted({s for q in QUARTERS if first < (s := math.ceil(q * total)) < total})


class StepProgress:
    """What `train_local` reports while it trains (``desc``: whose training, e.g. a grid cell)."""

    def __init__(self, total: int, first: int = 0, desc: str = "train", stream: Optional[TextIO] = None):
        self.total, self.first, self.desc = total, first, desc
        self.stream = sys.stdout if stream is None else stream
        self.start = time.perf_counter()
        self.shown_at = -math.inf
        self.bar = None
        self.marks: set[int] = set()
        if is_terminal(self.stream):
            self.bar = tqdm(total=total, initial=first, desc=desc, leave=False, file=self.stream,
                            dynamic_ncols=True, bar_format="{desc} {bar} {n_fmt}/{total_fmt}{postfix}")
        else:
            self.marks = set(line_steps(total, first))

    def seconds_per_step(self, done: int) -> float:
        return (time.perf_counter() - self.start) / max(1, done - self.first)

    def update(self, done: int, loss: torch.Tensor) -> None:
        """``done`` steps of ``total`` are finished, the last with ``loss`` (read only when shown)."""
        if self.bar is not None:
            now = time.perf_counter()
            if now - self.shown_at >= LOSS_REFRESH_S or done == self.total:
                self.shown_at = now
                self.bar.set_postfix_str(f"loss {float(loss):.4f}  {self.seconds_per_step(done):.2f} s/step",
                                         refresh=False)
            self.bar.update(1)
        elif done in self.marks:
            print(f"  {self.desc}: step {done}/{self.total} ({100 * done / self.total:.0f}%)  "
                  f"loss {float(loss):.4f}  {self.seconds_per_step(done):.2f} s/step",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
