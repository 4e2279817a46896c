"""Forest plot: each row's macro AUROC with its bootstrap CI, best first, references marked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clear_bench.plots.style import GRID, MUTED, colour, pyplot


@dataclass
class ForestRow:
    name: str
    mean: float
    low: float
    high: float
    reference: bool = False


def forest_figure(rows: Sequence[ForestRow], *, title: str, xlabel: str, chance: float | None = 0.5) -> Any:
    """Horizontal CI bars, ``rows`` top to bottom; references as squares in their own colour; a dotted
    line at ``chance``."""
    if not rows:
        raise ValueError("no row to draw")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 1.2 + 0.3 * len(rows)))
    for y, row in enumerate(rows):
        ref = row.reference
        tint = colour(4) if ref else colour(3)
        if not (math.isnan(row.low) or math.isnan(row.high)):
            ax.plot([row.low, row.high], [y, y], color=tint, linewidth=1.8, solid_capstyle="butt")
        if not math.isnan(row.mean):
            ax.plot(row.mean, y, marker="s" if ref else "o", color=tint, markersize=6, linestyle="none")
    ax.set_yticks(range(len(rows)), [f"{r.name} (reference)" if r.reference else r.name for r in rows],
                  fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if row.reference:
            tick.set_color(colour(4))
    ax.invert_yaxis()
    if chance is not None:
        ax.axvline(chance, color=MUTED, linestyle=":", linewidth=1)
    ax.grid(True, axis="x", color=GRID, linewidth=0.6)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
