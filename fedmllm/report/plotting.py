"""Matplotlib with the non-interactive backend, selected when a plot is made (not at import)."""

from __future__ import annotations

from pathlib import Path


def plt_figure(width: float, height: float, ncols: int = 1):
    """(figure, axes): one axes, or an array of ``ncols`` side by side."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
