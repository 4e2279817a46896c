"""Reliability diagrams of cross-validation results (matplotlib, Agg backend, no display needed).

Within each fold, the labels are pooled one-vs-rest (binary and multi-label: every (scan, label) pair;
multi-class: every (scan, class) pair against the one-hot target) and cut into equal-mass bins of that
fold's test scores (:func:`~clear_bench.evaluation.calibration.adaptive_bins`). Each bin gives a point
(mean predicted probability, observed frequency); bin ``k`` of every fold covers the same quantile range,
so the curve drawn is the mean over folds of bin ``k``'s point (over the folds where the bin is
non-empty). Probabilities of different fold models are never pooled into one curve: each fold model has
its own scale.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clear_bench.evaluation.calibration import DEFAULT_BINS, adaptive_bins
from clear_bench.figures import save_png
from clear_bench.plots.style import MARKERS, OKABE_ITO, colour, linestyle, pyplot

if TYPE_CHECKING:
    from clear_bench.evaluation.crossval import CrossValResult
    from clear_bench.plots.data import RowFolds


def pooled_fold(result: CrossValResult | RowFolds, fold_index: int) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, probabilities)`` of one fold's test set, labels pooled one-vs-rest, both ``[n * L]``."""
    fold = result.folds[fold_index]
    probs = np.asarray(fold.test_probs, dtype=np.float64).reshape(len(fold.test_ids), -1)
    y = result.targets(fold.test_ids)
    if result.label_type == "multiclass":
        y = np.eye(probs.shape[1])[np.asarray(y).reshape(-1)]
    return np.asarray(y, dtype=np.float64).reshape(probs.shape).ravel(), probs.ravel()


def fold_curves(result: CrossValResult | RowFolds, bins: int = DEFAULT_BINS) -> np.ndarray:
    """``[n_folds, 2, bins]``: per fold, the mean probability (row 0) and the observed frequency (row 1)
    of each adaptive bin of its pooled test scores; ``nan`` for an empty bin."""
    curves = np.full((len(result.folds), 2, bins), np.nan)
    for f in range(len(result.folds)):
        y, p = pooled_fold(result, f)
        index, _ = adaptive_bins(p, bins)
        counts = np.bincount(index, minlength=bins).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            curves[f, 0] = np.bincount(index, weights=p, minlength=bins) / counts
            curves[f, 1] = np.bincount(index, weights=y, minlength=bins) / counts
    return curves


def reliability_curve(result: CrossValResult | RowFolds,
                      bins: int = DEFAULT_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(mean probability, observed frequency)`` per bin, each the mean over folds of the fold's bin
    (folds where it is empty are skipped); bins empty in every fold are dropped."""
    curves = fold_curves(result, bins)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(curves, axis=0)
    keep = ~np.isnan(mean).any(axis=0)
    return mean[0, keep], mean[1, keep]


def reliability_diagram(results: Mapping[str, CrossValResult | RowFolds], path: Path, *, title: str,
                        bins: int = DEFAULT_BINS) -> Path:
    """Write :func:`reliability_figure` as a PNG to ``path`` (atomically)."""
    return save_png(reliability_figure(results, title=title, bins=bins), path, dpi=120, bbox_inches="tight")


def reliability_figure(results: Mapping[str, CrossValResult | RowFolds], *, title: str,
                       bins: int = DEFAULT_BINS) -> Any:
    """A reliability diagram: one line per row of ``results``.

    x is the mean predicted probability of each adaptive (equal-mass) bin, y the observed frequency; the
    dotted diagonal is perfect calibration. Labels are pooled one-vs-rest within each fold and the
    per-fold bin curves averaged: probabilities of different fold models are never pooled into one curve.
    The legend sits below the axes, so a dozen rows stay readable.
    """
    if not results:
        raise ValueError("no result to draw")
    plt = pyplot()
    curves = {}
    for name, result in results.items():
        if not result.folds:
            raise ValueError(f"row '{name}' has no fold")
        curves[name] = (reliability_curve(result, bins), len(result.folds))
    long_names = max(len(name) for name in results) > 30
    columns = 1 if long_names or len(results) < 4 else 2
    legend_rows = -(-len(results) // columns)
    fig, ax = plt.subplots(figsize=(6.4, 6.4 + 0.24 * legend_rows))
    ax.plot([0, 1], [0, 1], linestyle=":", color="#7f7f7f", linewidth=1.2, label="perfect calibration")
    for i, (name, ((x, y), n_folds)) in enumerate(curves.items()):
        ax.plot(x, y, color=colour(i), marker=MARKERS[i % len(MARKERS)], linestyle=linestyle(i),
                linewidth=1.6, markersize=5, label=f"{name} ({n_folds} folds)")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="mean predicted probability",
           ylabel="observed frequency")
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    pooled = "classes" if all(r.label_type == "multiclass" for r in results.values()) else "labels"
    ax.text(0.5, 1.005, f"{bins} equal-mass bins per fold, {pooled} pooled one-vs-rest, mean over folds",
            transform=ax.transAxes, ha="center", va="bottom", fontsize=7, color="#555555")
    ax.set_title(title, fontsize=11, pad=14)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=columns, fontsize=8, frameon=False)
    return fig


__all__ = ["OKABE_ITO", "fold_curves", "pooled_fold", "reliability_curve", "reliability_diagram",
           "reliability_figure"]
