"""Paired comparison of rows (encoders, or aggregators) evaluated on the same splits.

Usage::

    comparisons = compare_rows({"encoder A": result_a, "encoder B": result_b, ...}, metric="auroc")
    for c in comparisons:  # every row against the best one
        c.row, c.difference, c.ci_low, c.ci_high, c.p_value, c.p_holm, c.delong

The best row is the one with the highest mean-over-folds metric. For each other row the difference
``best - row`` of the mean-over-folds metric is recomputed on the *same* patient-level bootstrap
resamples for both rows (same patients drawn, within each fold's test set); the two-sided p-value is
the bootstrap share of differences on the far side of zero, and Holm's step-down correction is applied
across the comparisons. DeLong's test of the two AUROCs (fast algorithm of Sun & Xu, 2014) is reported
per fold and per label as a cross-check, and combined over folds per label (folds hold disjoint patients:
differences add, variances add). Rows on different splits or labels are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm, rankdata

from clear_bench.evaluation.bootstrap import bootstrap_weights, fold_values, percentile_interval, thresholds
from clear_bench.evaluation.crossval import CrossValResult, labels_digest
from clear_bench.evaluation.metrics import BUILTIN_METRICS, MACRO, nanmean
from clear_bench.evaluation.splits import SplitMismatchError, require_same_splits
from clear_bench.specs import MetricSpec


@dataclass
class DeLongTest:
    """DeLong's paired test of two AUROCs on one fold's test set (or combined over folds, ``fold=-1``)."""

    fold: int
    label: str
    auc_reference: float
    auc_row: float
    z: float
    p_value: float


@dataclass
class PairedComparison:
    """``reference`` (the best row) against ``row`` on one metric and label."""

    row: str
    reference: str
    metric: str
    label: str
    reference_value: float
    value: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float = math.nan
    delong: list[DeLongTest] = field(default_factory=list)


def delong(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[float, float, float, float]:
    """DeLong's test of AUROC(a) = AUROC(b) on the same cases: ``(auc_a, auc_b, z, p)``.

    Needs at least two cases of each class (``nan`` otherwise). Identical scores give ``z = 0, p = 1``.
    """
    y = np.asarray(y).reshape(-1).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return math.nan, math.nan, math.nan, math.nan
    scores = np.stack([np.asarray(scores_a, float).reshape(-1), np.asarray(scores_b, float).reshape(-1)])
    pos, neg = scores[:, y], scores[:, ~y]
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v_pos = (tz[:, :m] - tx) / n  # structural components of the positives
    v_neg = 1.0 - (tz[:, m:] - ty) / m  # and of the negatives
    s = np.cov(v_pos) / m + np.cov(v_neg) / n
    variance = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    difference = aucs[0] - aucs[1]
    if variance <= 1e-15:
        return float(aucs[0]), float(aucs[1]), 0.0, 1.0
    z = difference / math.sqrt(variance)
    return float(aucs[0]), float(aucs[1]), float(z), float(2 * norm.sf(abs(z)))


def _delong_variance(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """``(auc_a, auc_b, variance of the difference)`` or nans."""
    auc_a, auc_b, z, _ = delong(y, a, b)
    if math.isnan(z):
        return math.nan, math.nan, math.nan
    if z == 0.0:
        return auc_a, auc_b, 0.0
    return auc_a, auc_b, ((auc_a - auc_b) / z) ** 2


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of ``difference == 0`` from the resampled differences."""
    d = differences[~np.isnan(differences)]
    if len(d) == 0:
        return math.nan
    below = (np.sum(d <= 0) + 1) / (len(d) + 1)
    above = (np.sum(d >= 0) + 1) / (len(d) + 1)
    return float(min(1.0, 2 * min(below, above)))


def check_comparable(results: Mapping[str, CrossValResult]) -> None:
    """Raise :class:`SplitMismatchError` unless every row has the same splits, test sets and labels."""
    require_same_splits({row: r.split_fingerprint for row, r in results.items()})
    signatures = {}
    for row, result in results.items():
        folds = sorted(result.folds, key=lambda f: f.fold)
        test_sets = tuple(tuple(f.test_ids) for f in folds)
        signatures[row] = (test_sets, labels_digest(result.labels, [i for t in test_sets for i in t]))
    if len(set(signatures.values())) > 1:
        raise SplitMismatchError("rows differ in their folds' test sets or labels (a shuffle control, or an "
                                 f"unfinished run?): {', '.join(sorted(results))}")


def compare_rows(results: Mapping[str, CrossValResult], metric: str = "auroc", label: str = MACRO,
                 n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 metrics: Sequence[MetricSpec] | None = None) -> list[PairedComparison]:
    """Every row against the best on ``metric``/``label``, on shared bootstrap resamples, Holm-corrected.

    ``metric`` is the name of a built-in metric or of one of ``metrics``."""
    if len(results) < 2:
        return []
    check_comparable(results)
    first = next(iter(results.values()))
    label_names = [*first.label_names, MACRO]
    if label not in label_names:
        raise KeyError(f"unknown label '{label}', expected one of {label_names}")
    column = label_names.index(label)
    weights = bootstrap_weights(first, n_boot, seed)
    point, draws = {}, {}
    for row, result in results.items():
        cuts = thresholds(result)
        chosen = _only(metric, metrics)
        point[row] = float(nanmean(fold_values(result, None, cuts, chosen)[metric][:, 0, column], axis=0))
        draws[row] = nanmean(fold_values(result, weights, cuts, chosen)[metric][:, :, column], axis=0)
    best = max(point, key=lambda r: (not math.isnan(point[r]), point[r]))
    comparisons = []
    for row in results:
        if row == best:
            continue
        differences = draws[best] - draws[row]
        low, high = percentile_interval(differences, level)
        comparisons.append(PairedComparison(
            row, best, metric, label, point[best], point[row], point[best] - point[row], low, high,
            bootstrap_p_value(differences),
            delong=_delong_tests(results[best], results[row], label) if metric == "auroc" else [],
        ))
    for comparison, adjusted in zip(comparisons, holm([c.p_value for c in comparisons]), strict=True):
        comparison.p_holm = adjusted
    return comparisons


def _only(name: str, metrics: Sequence[MetricSpec] | None) -> list[MetricSpec]:
    """The one metric spec that is compared (computing the others on every resample is wasted work)."""
    for spec in (*(metrics or ()), *BUILTIN_METRICS):
        if spec.name == name:
            return [spec]
    raise KeyError(f"unknown metric '{name}'")


def _delong_tests(reference: CrossValResult, other: CrossValResult, label: str) -> list[DeLongTest]:
    """Per fold and per label (or the one label asked for), plus the combination over folds."""
    labels = reference.label_names if label == MACRO else [label]
    tests = []
    other_folds = {f.fold: f for f in other.folds}
    for name in labels:
        j = reference.label_names.index(name)
        total_diff, total_var, aucs = 0.0, 0.0, []
        for fold in sorted(reference.folds, key=lambda f: f.fold):
            y = reference.targets(fold.test_ids)
            y = (y == j) if reference.label_type == "multiclass" else y[:, j]
            a, b = fold.test_probs[:, j], other_folds[fold.fold].test_probs[:, j]
            auc_a, auc_b, z, p = delong(y, a, b)
            tests.append(DeLongTest(fold.fold, name, auc_a, auc_b, z, p))
            _, _, variance = _delong_variance(y, a, b)
            if not math.isnan(variance):
                total_diff += auc_a - auc_b
                total_var += variance
                aucs.append((auc_a, auc_b))
        if aucs:
            k = len(aucs)
            mean_a, mean_b = float(np.mean([x[0] for x in aucs])), float(np.mean([x[1] for x in aucs]))
            if total_var > 0:
                z = (total_diff / k) / math.sqrt(total_var / k**2)
                tests.append(DeLongTest(-1, name, mean_a, mean_b, float(z), float(2 * norm.sf(abs(z)))))
            else:
                tests.append(DeLongTest(-1, name, mean_a, mean_b, 0.0, 1.0))
    return tests
