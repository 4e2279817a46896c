"""Label-efficiency curves: each row's macro AUROC against the labelled patients its folds train on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clear_bench.leaderboard import EfficiencyPoint
from clear_bench.plots.style import GRID, MARKERS, MUTED, colour, linestyle, pyplot


def efficiency_figure(curves: Mapping[str, Sequence[EfficiencyPoint]], *, title: str,
                      chance: float | None = 0.5) -> Any:
    """One line per row (mean over the draws) with its CI as a band, on a log axis of training patients;
    legend in the order of ``curves``."""
    if not curves:
        raise ValueError("no curve to draw")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.2 + 0.12 * max(0, len(curves) - 8)))
    for i, (name, points) in enumerate(curves.items()):
        x = [p.patients for p in points]
        ax.fill_between(x, [p.ci_low for p in points], [p.ci_high for p in points], color=colour(i),
                        alpha=0.12, linewidth=0)
        ax.plot(x, [p.mean for p in points], color=colour(i), linestyle=linestyle(i),
                marker=MARKERS[i % len(MARKERS)], markersize=4, linewidth=1.4, label=name)
    ax.set_xscale("log")
    ticks = sorted({round(p.patients) for points in curves.values() for p in points})
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
    ax.minorticks_off()
    if chance is not None:
        ax.axhline(chance, color=MUTED, linestyle=":", linewidth=1)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.set_xlabel("labelled training patients per fold (log scale)", fontsize=9)
    ax.set_ylabel("macro AUROC [95% CI]", fontsize=9)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig
