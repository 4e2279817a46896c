"""One look for every plot: a colour-blind-safe palette (Okabe-Ito), markers and line styles to tell more
series apart than there are colours, and the Agg backend."""

from __future__ import annotations

from typing import Any

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442")
"""Okabe-Ito colours (colour-blind safe), yellow last: it is the hardest to see on white."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", ":")
GRID = "#e5e5e5"
MUTED = "#555555"
DPI = 100
GRID_DPI = 80
"""For the grids of small panels (ROC curves, attention): one panel per row keeps them large already."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def linestyle(i: int) -> str:
    """Solid for the first len(palette) series, then dashed, then dotted."""
    return LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)]


def shorten(label: str, width: int = 60) -> str:
    """``label`` cut to ``width`` characters with an ellipsis: a very long id must not squeeze the axes
    out of a figure."""
    return label if len(label) <= width else label[:width - 1] + "…"
