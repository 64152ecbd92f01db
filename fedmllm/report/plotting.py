"""Shared plot helpers. Matplotlib with the non-interactive backend, selected when a plot is made
(not at import).

Every panel of a report follows the same rules: axis labels with units, a title that says what is
drawn, one fixed colour, marker and line style per system in every panel (`system_styles`, a
deterministic map from the report's list of system names; distinct markers and dashes keep a line
that lies on another visible), chance / majority floors as labelled dashed / dotted lines
(`floor_lines`), and legends outside the data area (`legend_outside`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

MARKERS = "osD^vP*Xh<>p"
LINESTYLES = ("-", "--", "-.", ":")


def plt_figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """(figure, axes): one axes, or an array of ``nrows`` x ``ncols``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height))


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def system_colours(names: list[str]) -> dict:
    """One colour per name, by its position in ``names`` (tab10, or tab20 beyond 10 names)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(dict.fromkeys(names))}


def system_styles(names: list[str]) -> dict[str, dict]:
    """name -> ``plot`` keywords (color, marker, linestyle), fixed by the name's position in
    ``names``: the same system looks the same in every panel, and two systems differ in colour,
    marker and (cycling through four) dash pattern."""
    colours = system_colours(names)
    return {n: {"color": colours[n], "marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}
            for i, n in enumerate(colours)}


def style_of(styles: dict[str, dict], name: str) -> dict:
    """``styles[name]``, or a grey style for a name the map does not know (never a crash)."""
    return styles.get(name, {"color": "grey", "marker": ".", "linestyle": "-"})


def legend_outside(ax, below: bool = False, **kwargs) -> None:
    """The axes' legend outside the data: to the right, top-aligned, or ``below`` the axes
    (nothing when there are no labels)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    where = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.3), "ncol": 2} if below else \
        {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    ax.legend(handles, labels, fontsize=7, borderaxespad=0, **{**where, **kwargs})


def floor_lines(ax, chance: Optional[float], majority: Optional[float], what: str = "", color="black") -> None:
    """Chance (dashed) and majority (dotted) floors as horizontal lines labelled for the legend."""
    suffix = f" ({what})" if what else ""
    if chance is not None:
        ax.axhline(chance, color=color, ls=(0, (5, 3)), lw=1.0, alpha=0.8, label=f"chance{suffix}: {chance:.1f}")
    if majority is not None:
        ax.axhline(majority, color=color, ls=(0, (1, 2)), lw=1.2, alpha=0.8, label=f"majority{suffix}: {majority:.1f}")
