"""Calibration metrics of one fold's test probabilities: the Brier score and the adaptive-bin ECE.

Both follow the :class:`~clear_bench.specs.MetricSpec` contract of :mod:`metrics`: per label (per class,
one-vs-rest, for multi-class) against the 0/1 target, weighted by bootstrap weights ``[B, n]`` (``None``:
all ones) and vectorised over the ``B`` rows; the macro column is the mean over labels. Lower is better.
Unlike AUROC they are defined when a single class is present (predicting it confidently is calibrated);
they are ``nan`` only when the rows carry no weight.

- :func:`brier`: ``sum_i w_i (p_i - y_i)^2 / sum_i w_i``.
- :func:`expected_calibration_error`: equal-mass bins fixed from the unweighted scores (see
  :func:`adaptive_bins`), then ``sum_m |sum_{i in m} w_i (y_i - p_i)| / sum_i w_i``. A sum of absolute
  gaps is biased upward on small samples, and a bootstrap draw adds noise to every gap: on small test
  folds the ECE's bootstrap interval can sit wholly above the point value. Compare rows on the same
  folds and resamples rather than reading the ECE as an absolute number.
- :data:`CALIBRATION_METRICS` wraps them as specs (``brier``, ``ece``).
"""

from __future__ import annotations

import numpy as np

from clear_bench.specs import MetricSpec, per_label_metric

DEFAULT_BINS = 10


def _inputs(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None):
    y = np.asarray(y).reshape(-1).astype(np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != scores.shape:
        raise ValueError(f"labels {y.shape} and scores {scores.shape} differ in length")
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape[1] != len(y):
        raise ValueError(f"weights {w.shape} do not match {len(y)} rows")
    return y, scores, w, weights is None or np.ndim(weights) == 1


def _finish(numerator: np.ndarray, total: np.ndarray, single: bool):
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(total > 0, numerator / np.where(total > 0, total, 1.0), np.nan)
    return float(values[0]) if single else values


def brier(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None):
    """Weighted mean squared error of ``scores`` against 0/1 ``y``: ``sum w (p - y)^2 / sum w``.

    A float for ``weights`` ``None`` or ``[n]``, ``[B]`` for ``[B, n]``; ``nan`` where the weights sum to 0.
    """
    y, scores, w, single = _inputs(y, scores, weights)
    return _finish(w @ (scores - y) ** 2, w.sum(axis=1), single)


def adaptive_bins(scores: np.ndarray, bins: int = DEFAULT_BINS) -> tuple[np.ndarray, int]:
    """Equal-mass bin of each score: ``(bin index [n], K)`` with ``K = bins`` bins, some possibly empty.

    With the scores sorted, ``s_(1) <= ... <= s_(n)``, the upper edge of bin ``k`` (``k = 1 .. K-1``) is
    ``u_k = s_(ceil(k n / K))`` and bin ``k`` is ``(u_{k-1}, u_k]`` (``u_0 = -inf``, ``u_K = +inf``). Without
    ties every bin holds ``n / K`` rows (up to rounding); tied scores always share a bin (the lower one), so
    repeated edges leave bins empty and at most ``min(bins, n, distinct scores)`` bins are used.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64), bins
    ordered = np.sort(scores)
    ranks = -(-np.arange(1, bins) * n // bins)  # ceil(k n / K), 1-based
    edges = ordered[ranks - 1]
    return np.searchsorted(edges, scores, side="left").astype(np.int64), bins


def expected_calibration_error(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None,
                               bins: int = DEFAULT_BINS):
    """Expected calibration error over adaptive (equal-mass) bins.

    The bins are chosen once from the unweighted ``scores`` (:func:`adaptive_bins`: ``bins`` equal-mass
    bins, tied scores together, so fewer non-empty bins with fewer distinct scores or rows). For each
    weight row ``w`` (one bootstrap draw)::

        ECE = sum_m (W_m / W) |Y_m / W_m - P_m / W_m| = sum_m |Y_m - P_m| / W

    with ``W_m = sum_{i in m} w_i``, ``Y_m = sum_{i in m} w_i y_i``, ``P_m = sum_{i in m} w_i p_i`` and
    ``W = sum_i w_i``: the weight share of each bin times the gap between its observed frequency and its
    mean score (bins without weight add nothing). ``nan`` where ``W = 0``.
    """
    y, scores, w, single = _inputs(y, scores, weights)
    index, k = adaptive_bins(scores, bins)
    one_hot = np.zeros((len(y), k))
    one_hot[np.arange(len(y)), index] = 1.0
    gap = (w * (y - scores)) @ one_hot  # [B, K]: Y_m - P_m
    return _finish(np.abs(gap).sum(axis=1), w.sum(axis=1), single)


def make_ece_spec(bins: int = DEFAULT_BINS, name: str = "ece") -> MetricSpec:
    """The ECE as a metric with ``bins`` adaptive bins per label."""

    def score(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None):
        return expected_calibration_error(y, scores, weights, bins)

    return MetricSpec(name, per_label_metric(score), higher_is_better=False, title="ECE", interval=False,
                      description=f"expected calibration error over {bins} adaptive (equal-mass) bins per "
                                  "label (one-vs-rest per class), macro mean")


brier_spec = MetricSpec(
    "brier", per_label_metric(brier), higher_is_better=False, title="Brier",
    description="mean squared error of each label's probability (one-vs-rest per class), macro mean")
ece_spec = make_ece_spec()

CALIBRATION_METRICS: tuple[MetricSpec, ...] = (brier_spec, ece_spec)
"""The calibration metrics, ready to register through the ``clear_bench_metrics`` hook."""

__all__ = [
    "CALIBRATION_METRICS",
    "DEFAULT_BINS",
    "adaptive_bins",
    "brier",
    "brier_spec",
    "ece_spec",
    "expected_calibration_error",
    "make_ece_spec",
]
