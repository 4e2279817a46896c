"""Classification metrics from probabilities, with optional per-sample weights.

Every function takes ``weights`` of shape ``[n]`` or ``[B, n]`` (``None`` = all ones) and returns a float
or a ``[B]`` array. A bootstrap resample of patients is exactly a weighting of the original rows by how
often each patient was drawn, so one sort of the scores serves all resamples (see :mod:`bootstrap`).
A metric that is undefined (a single class present) is ``nan``: it is skipped, never replaced by 0.5.

- :func:`auroc` (Mann-Whitney with mid-ranks for ties), :func:`auprc` (average precision, as
  scikit-learn defines it), :func:`balanced_accuracy` at a given threshold, :func:`choose_threshold`
  (Youden's J on validation data), and for multi-class :func:`multiclass_f1_macro` and
  :func:`multiclass_balanced_accuracy` of the arg-max prediction.
- :data:`BUILTIN_METRICS` wraps them as :class:`~clear_bench.specs.MetricSpec` (registered through the
  ``clear_bench_metrics`` hook); :func:`fold_metrics` computes every metric of one fold: per label (per
  class, one-vs-rest, for multi-class) and the macro mean over labels that are defined.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from clear_bench.specs import MetricSpec, per_label_metric

MACRO = "macro"


def _prepare(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None, descending: bool):
    y = np.asarray(y).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != scores.shape:
        raise ValueError(f"labels {y.shape} and scores {scores.shape} differ in length")
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(-scores if descending else scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, dtype=np.int64)
    w = w[:, order]
    pos = w * y[order]
    neg = w * ~y[order]
    return pos, neg, starts, weights is None or np.ndim(weights) == 1


def _finish(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


_PAIR_LIMIT = 250_000
"""Positive x negative pairs up to which many-resample AUROCs go through a pair matrix (one matrix product)
rather than one sort-and-cumulate pass per resample."""


def auroc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None):
    """Area under the ROC curve of ``scores`` for 0/1 labels ``y``; ``nan`` without both classes."""
    if weights is not None and np.ndim(weights) == 2 and len(weights) > 1:
        y_bool = np.asarray(y).reshape(-1).astype(bool)
        if 0 < y_bool.sum() * (~y_bool).sum() <= _PAIR_LIMIT:
            return _pairwise_auroc(y_bool, np.asarray(scores, dtype=np.float64).reshape(-1),
                                   np.asarray(weights, dtype=np.float64))
    pos, neg, starts, single = _prepare(y, scores, weights, descending=False)
    if pos.shape[1] == 0:
        return _finish(np.full(pos.shape[0], np.nan), single)
    p_level = np.add.reduceat(pos, starts, axis=1)
    n_level = np.add.reduceat(neg, starts, axis=1)
    neg_below = np.cumsum(n_level, axis=1) - n_level
    u = np.sum(p_level * (neg_below + 0.5 * n_level), axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(denominator > 0, u / denominator, np.nan)
    return _finish(values, single)


def _pairwise_auroc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUROC of every row of ``weights [B, n]``: ``w_pos @ C @ w_neg`` with ``C`` the
    pair matrix (1 where the positive scores higher, 1/2 on ties). With integer weights (bootstrap counts)
    every sum is exact, so the values equal the sort-based ones bit for bit."""
    if y.shape != scores.shape or weights.shape[1] != len(y):
        raise ValueError(f"labels {y.shape}, scores {scores.shape} and weights {weights.shape} differ")
    pos, neg = scores[y], scores[~y]
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    w_pos, w_neg = weights[:, y], weights[:, ~y]
    u = np.einsum("bj,bj->b", w_pos @ pairs, w_neg)
    denominator = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, u / denominator, np.nan)


def auprc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None):
    """Average precision (step-wise area under precision-recall); ``nan`` without a positive."""
    pos, neg, starts, single = _prepare(y, scores, weights, descending=True)
    if pos.shape[1] == 0:
        return _finish(np.full(pos.shape[0], np.nan), single)
    tp_level = np.add.reduceat(pos, starts, axis=1)
    fp_level = np.add.reduceat(neg, starts, axis=1)
    tp, fp = np.cumsum(tp_level, axis=1), np.cumsum(fp_level, axis=1)
    total_pos = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        values = np.sum(tp_level * precision, axis=1) / total_pos
    values = np.where(total_pos > 0, values, np.nan)
    return _finish(values, single)


def balanced_accuracy(y: np.ndarray, scores: np.ndarray, threshold: float,
                      weights: np.ndarray | None = None):
    """Mean of sensitivity and specificity of ``scores >= threshold``; ``nan`` without both classes."""
    y = np.asarray(y).reshape(-1).astype(bool)
    predicted = np.asarray(scores, dtype=np.float64).reshape(-1) >= threshold
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n_pos, n_neg = (w * y).sum(axis=1), (w * ~y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (w * (y & predicted)).sum(axis=1) / n_pos
        specificity = (w * (~y & ~predicted)).sum(axis=1) / n_neg
    values = np.where((n_pos > 0) & (n_neg > 0), 0.5 * (sensitivity + specificity), np.nan)
    return _finish(values, weights is None or np.ndim(weights) == 1)


def choose_threshold(y: np.ndarray, scores: np.ndarray, default: float = 0.5) -> tuple[float, bool]:
    """The threshold maximising balanced accuracy (Youden's J) on validation data.

    Returns ``(threshold, chosen)``; ``chosen`` is False (and ``default`` returned) when the validation
    data lack a class. Among equally good cut points the midpoint to the next lower score is used.
    """
    y = np.asarray(y).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.all() or not y.any():
        return default, False
    levels = np.unique(scores)[::-1]  # candidate cut points, high to low: predict positive if >= level
    above = scores[None, :] >= levels[:, None]
    sensitivity = (above & y).sum(axis=1) / y.sum()
    specificity = (~above & ~y).sum(axis=1) / (~y).sum()
    best = int(np.argmax(sensitivity + specificity))
    lower = levels[best + 1] if best + 1 < len(levels) else levels[best] - 1e-6
    return float(0.5 * (levels[best] + lower)), True


def _confusion(y: np.ndarray, predicted: np.ndarray, n_classes: int, w: np.ndarray) -> np.ndarray:
    """Weighted confusion counts ``[B, true, predicted]``."""
    cells = y * n_classes + predicted
    one_hot = np.zeros((len(y), n_classes * n_classes))
    one_hot[np.arange(len(y)), cells] = 1.0
    return (w @ one_hot).reshape(-1, n_classes, n_classes)


def multiclass_f1_macro(y: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None):
    """Macro-F1 of the arg-max class over classes that are true or predicted (as scikit-learn does)."""
    y = np.asarray(y).reshape(-1).astype(np.int64)
    probs = np.asarray(probs)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    confusion = _confusion(y, probs.argmax(axis=1), probs.shape[1], w)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    denominator = 2 * tp + (confusion.sum(axis=1) - tp) + (confusion.sum(axis=2) - tp)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = np.nanmean(np.where(denominator > 0, 2 * tp / denominator, np.nan), axis=1)
    return _finish(values, weights is None or np.ndim(weights) == 1)


def multiclass_balanced_accuracy(y: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None):
    """Mean recall of the arg-max class over the classes present in ``y``."""
    y = np.asarray(y).reshape(-1).astype(np.int64)
    probs = np.asarray(probs)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    confusion = _confusion(y, probs.argmax(axis=1), probs.shape[1], w)
    support = confusion.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        recall = np.where(support > 0, np.diagonal(confusion, axis1=1, axis2=2) / support, np.nan)
        values = np.nanmean(recall, axis=1)
    return _finish(values, weights is None or np.ndim(weights) == 1)


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring ``nan``; ``nan`` (without a warning) where every value is ``nan``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _balanced_accuracy_compute(label_type: str, y: np.ndarray, probs: np.ndarray,
                               thresholds: Sequence[float], weights: np.ndarray | None) -> np.ndarray:
    """Per label at its validation-chosen threshold; multi-class: the arg-max class, macro only."""
    probs = np.asarray(probs, dtype=np.float64)
    n_boot = 1 if weights is None else np.atleast_2d(weights).shape[0]
    if label_type == "multiclass":
        overall = np.broadcast_to(multiclass_balanced_accuracy(y, probs, weights), (n_boot,))
        return np.concatenate([np.full((n_boot, probs.shape[1]), np.nan), overall[:, None]], axis=1)
    y = np.asarray(y).reshape(len(probs), -1).astype(bool)
    per = np.stack([np.broadcast_to(balanced_accuracy(y[:, j], probs[:, j], thresholds[j], weights),
                                    (n_boot,)) for j in range(probs.shape[1])], axis=1)
    return np.concatenate([per, nanmean(per, axis=1)[:, None]], axis=1)


def _f1_macro_compute(label_type: str, y: np.ndarray, probs: np.ndarray, thresholds: Sequence[float],
                      weights: np.ndarray | None) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    n_boot = 1 if weights is None else np.atleast_2d(weights).shape[0]
    overall = np.broadcast_to(multiclass_f1_macro(y, probs, weights), (n_boot,))
    return np.concatenate([np.full((n_boot, probs.shape[1]), np.nan), overall[:, None]], axis=1)


BUILTIN_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("auroc", per_label_metric(auroc), title="AUROC",
               description="area under the ROC curve per label (one-vs-rest per class), macro mean"),
    MetricSpec("auprc", per_label_metric(auprc), title="AUPRC",
               description="average precision per label (one-vs-rest per class), macro mean"),
    MetricSpec("balanced_accuracy", _balanced_accuracy_compute, title="balanced acc.",
               description="mean of sensitivity and specificity at the validation-chosen threshold "
                           "(multi-class: mean recall of the arg-max class)"),
    MetricSpec("f1_macro", _f1_macro_compute, label_types=("multiclass",), title="f1_macro",
               description="macro F1 of the arg-max class"),
)
"""The core's metrics, registered through the ``clear_bench_metrics`` hook like any plugin's."""


def fold_metrics(label_type: str, y: np.ndarray, probs: np.ndarray, thresholds: Sequence[float],
                 weights: np.ndarray | None = None,
                 metrics: Sequence[MetricSpec] | None = None) -> dict[str, np.ndarray]:
    """Every metric of one fold's test set, per label and macro.

    ``y`` is ``[n, L]`` 0/1 (binary, multi-label) or ``[n]`` class indices (multi-class); ``probs`` is
    ``[n, L]`` (sigmoid) or ``[n, C]`` (softmax); ``thresholds`` has one validation-chosen threshold per
    label (ignored for multi-class). ``metrics`` default to the built-in ones; those that do not apply to
    ``label_type`` are skipped. Returns ``{metric: array [B, L + 1]}`` where the last column is the macro
    value (``B = 1`` without weights).
    """
    probs = np.asarray(probs, dtype=np.float64)
    w = np.ones((1, probs.shape[0])) if weights is None else np.atleast_2d(weights)
    chosen = BUILTIN_METRICS if metrics is None else metrics
    out: dict[str, np.ndarray] = {}
    for metric in chosen:
        if label_type not in metric.label_types:
            continue
        values = np.asarray(metric.compute(label_type, y, probs, thresholds, w), dtype=np.float64)
        expected = (w.shape[0], probs.shape[1] + 1)
        if values.shape != expected:
            raise ValueError(f"metric '{metric.name}' returned shape {values.shape}, expected {expected}")
        out[metric.name] = values
    return out
