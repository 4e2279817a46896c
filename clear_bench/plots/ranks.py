"""The overall board as a heat map: each row's rank on each task (1 = best), rows in overall order."""

from __future__ import annotations

from typing import Any

import numpy as np

from clear_bench.leaderboard import OverallStanding
from clear_bench.plots.style import pyplot, shorten


def rank_heatmap(standing: OverallStanding, *, title: str) -> Any:
    """Ranks per (row, task); the colour map (cividis, colour-blind safe) is dark for the best ranks."""
    if not standing.order:
        raise ValueError("no row to draw")
    plt = pyplot()
    tasks, order = standing.tasks, standing.order
    ranks = np.array([[standing.rank[name].get(task, np.nan) for task in tasks] for name in order], float)
    labels = [f"{shorten(' + '.join(standing.names[n]))}  ({standing.mean_rank(n):.2f})" for n in order]
    margin = max(2.2, 0.055 * max(len(label) for label in labels))  # inches for the row labels
    fig, ax = plt.subplots(figsize=(margin + 1.3 * len(tasks) + 0.9, 1.3 + 0.32 * len(order)))
    image = ax.imshow(ranks, cmap="cividis", aspect="auto", vmin=1, vmax=max(2.0, float(np.nanmax(ranks))))
    worst = np.nanmax(ranks)
    for i in range(len(order)):
        for j in range(len(tasks)):
            if not np.isnan(ranks[i, j]):
                ax.text(j, i, f"{int(ranks[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if ranks[i, j] < 0.5 * (1 + worst) else "black")
    ax.set_yticks(range(len(order)), labels, fontsize=7)
    ax.set_xticks(range(len(tasks)), [shorten(task, 24) for task in tasks], fontsize=8)
    ax.xaxis.tick_top()
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("rank on the task (1 = best)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(f"{shorten(title, 40)}: rank per task (mean rank in brackets)", fontsize=10, pad=26)
    fig.tight_layout()
    return fig
