"""ROC curves per row: one curve per fold and label (or class, one-vs-rest), never pooling probabilities of
different fold models; the bold line of each label is the vertical mean of its fold curves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from clear_bench.plots.data import RowFolds
from clear_bench.plots.style import GRID, MUTED, colour, linestyle, pyplot

GRID_POINTS = np.linspace(0.0, 1.0, 101)


def fold_roc_curves(row: RowFolds, label: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fpr, tpr)`` of every fold whose test set has both classes of ``label`` (column ``label``)."""
    from sklearn.metrics import roc_curve

    curves = []
    for fold in sorted(row.folds, key=lambda f: f.fold):
        y, p = row.one_vs_rest(fold)
        if 0 < y[:, label].sum() < len(y):
            fpr, tpr, _ = roc_curve(y[:, label], p[:, label])
            curves.append((fpr, tpr))
    return curves


def roc_figure(rows: Mapping[str, RowFolds], *, title: str, columns: int = 3) -> Any:
    """One panel per row; thin lines: the fold curves of each label, bold: their mean on a common FPR grid."""
    if not rows:
        raise ValueError("no row to draw")
    plt = pyplot()
    first = next(iter(rows.values()))
    names = list(first.label_names)
    columns = min(columns, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.1 * columns, 3.2 * lines + 1.0), squeeze=False,
                             layout="constrained")
    for ax, (name, row) in zip(axes.flat, rows.items(), strict=False):
        ax.plot([0, 1], [0, 1], linestyle=":", color=MUTED, linewidth=0.8)
        for j in range(len(names)):
            curves = fold_roc_curves(row, j)
            for fpr, tpr in curves:
                ax.plot(fpr, tpr, color=colour(j), linestyle=linestyle(j), linewidth=0.6, alpha=0.35)
            if curves:
                mean = np.mean([np.interp(GRID_POINTS, fpr, tpr) for fpr, tpr in curves], axis=0)
                ax.plot(GRID_POINTS, mean, color=colour(j), linestyle=linestyle(j), linewidth=1.6)
        ax.set_title(name, fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
        ax.grid(True, color=GRID, linewidth=0.5)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("false positive rate", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("true positive rate", fontsize=8)
    handles = [plt.Line2D([], [], color=colour(j), linestyle=linestyle(j), linewidth=1.6, label=label)
               for j, label in enumerate(names)]
    noun = "class (one-vs-rest)" if first.label_type == "multiclass" else "label"
    fig.suptitle(f"{title}\nthin: each fold's curve per {noun}; bold: their mean (fold models never pooled)",
                 fontsize=10)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8,
               frameon=False)
    return fig
