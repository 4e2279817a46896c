"""Per-fold scores, mean +- std over folds, and the patient-level bootstrap confidence interval.

The statistic is the mean over folds of a per-fold metric. Probabilities of different fold models are
never pooled into one metric: each fold model has its own scale, and pooling them drifts below 0.5 when
there is no signal. The bootstrap resamples patients with replacement *within each fold's test set*
(all scans of a drawn patient come along), recomputes each fold's metric and averages over folds; the
2.5 and 97.5 percentiles of those means are the 95% interval. A label that has a single class in a
fold's test set is skipped in that fold (reported in ``notes``), never scored as 0.5.

Usage::

    summary = summarize(result, n_boot=1000, seed=0)
    summary.get("auroc")            # MetricSummary of the macro AUROC: mean, std, ci_low, ci_high, ...
    summary.get("auroc", "liver")   # one label (one class, one-vs-rest, for multi-class)
    summary.to_dict()               # JSON-ready

:func:`bootstrap_weights` draws the resamples; :mod:`compare` passes the same draws to every row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from clear_bench.evaluation.metrics import MACRO, choose_threshold, fold_metrics, nanmean

if TYPE_CHECKING:
    from clear_bench.evaluation.crossval import CrossValResult
    from clear_bench.specs import MetricSpec


@dataclass
class MetricSummary:
    """One metric of one label (or ``macro``) over folds."""

    metric: str
    label: str
    mean: float
    std: float
    ci_low: float
    ci_high: float
    fold_values: list[float]
    n_folds: int
    """Folds in which the value is defined (over all repeats)."""
    repeat_std: float = math.nan
    """Standard deviation of the repeats' means (``nan`` with one repeat): the spread that comes from
    the split and training seeds, which the bootstrap CI does not cover."""
    repeats: int = 1


@dataclass
class Summary:
    """Every metric of one cross-validation result."""

    aggregator: str
    label_type: str
    label_names: list[str]
    split_fingerprint: str
    n_boot: int
    level: float
    rows: dict[tuple[str, str], MetricSummary] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def get(self, metric: str, label: str = MACRO) -> MetricSummary:
        return self.rows[(metric, label)]

    def to_dict(self) -> dict:
        return {
            "aggregator": self.aggregator, "label_type": self.label_type, "label_names": self.label_names,
            "split_fingerprint": self.split_fingerprint, "n_boot": self.n_boot, "level": self.level,
            "metrics": [_finite(asdict(row)) for row in self.rows.values()], "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Summary:
        """The summary :meth:`to_dict` wrote (undefined values, stored as null, come back as NaN)."""
        rows = [MetricSummary(**_nan(row)) for row in data["metrics"]]
        return cls(data["aggregator"], data["label_type"], list(data["label_names"]),
                   data["split_fingerprint"], int(data["n_boot"]), float(data["level"]),
                   {(row.metric, row.label): row for row in rows}, list(data["notes"]))


def thresholds(result: CrossValResult) -> list[list[float]]:
    """Per fold, per label: the threshold maximising balanced accuracy on the fold's validation set."""
    out = []
    for fold in result.folds:
        if result.label_type == "multiclass":
            out.append([])
            continue
        y_val = result.targets(fold.val_ids)
        out.append([choose_threshold(y_val[:, j], fold.val_probs[:, j])[0] for j in range(y_val.shape[1])])
    return out


def bootstrap_weights(result: CrossValResult, n_boot: int, seed: int) -> list[np.ndarray]:
    """Per fold, ``[n_boot, n_test]`` weights: how often each test row's patient was drawn.

    Depends only on the folds' test ids, the patient grouping, ``n_boot`` and ``seed``: results on the
    same splits get identical resamples.
    """
    rng = np.random.default_rng(seed)
    weights = []
    for fold in sorted(result.folds, key=lambda f: f.fold):
        patients = [result.patient_of.get(i, i) for i in fold.test_ids]
        unique, group = np.unique(patients, return_inverse=True)
        counts = rng.multinomial(len(unique), np.full(len(unique), 1.0 / len(unique)), size=n_boot)
        weights.append(counts[:, group].astype(np.float64))
    return weights


def fold_values(result: CrossValResult, weights: list[np.ndarray] | None = None,
                cuts: list[list[float]] | None = None,
                metrics: Sequence[MetricSpec] | None = None) -> dict[str, np.ndarray]:
    """``{metric: [n_folds, B, L + 1]}`` (last column macro); ``B = 1`` without ``weights``; ``metrics``
    default to the built-in ones."""
    cuts = thresholds(result) if cuts is None else cuts
    folds = sorted(result.folds, key=lambda f: f.fold)
    per_fold = []
    for i, fold in enumerate(folds):
        w = None if weights is None else weights[i]
        per_fold.append(fold_metrics(result.label_type, result.targets(fold.test_ids), fold.test_probs,
                                     cuts[i], w, metrics))
    return {name: np.stack([values[name] for values in per_fold]) for name in per_fold[0]}


def summarize(result: CrossValResult | Sequence[CrossValResult], n_boot: int = 1000, seed: int = 0,
              level: float = 0.95, weights: list[np.ndarray] | None = None,
              metrics: Sequence[MetricSpec] | None = None) -> Summary:
    """Mean +- std over folds and the patient-level bootstrap CI of every metric (the built-in ones
    unless ``metrics`` are given), per label and macro.

    With several results (repeats on distinct splits of the same scans) the value is the mean over
    repeats of the mean over folds; each repeat is resampled within its own test folds (seed ``seed + r``)
    and the CI is that of the mean over repeats; ``repeat_std`` is the spread of the repeats' means.
    """
    results = [result] if not isinstance(result, Sequence) else list(result)
    if not results or any(not r.folds for r in results):
        raise ValueError("the result has no fold")
    if weights is not None and len(results) > 1:
        raise ValueError("given bootstrap weights apply to a single result")
    points, draws = [], []
    for r, res in enumerate(results):
        cuts = thresholds(res)
        points.append(fold_values(res, None, cuts, metrics))
        w = bootstrap_weights(res, n_boot, seed + r) if weights is None else weights
        draws.append(fold_values(res, w, cuts, metrics))
    first = results[0]
    fingerprint = first.split_fingerprint if len(results) == 1 else \
        "+".join(r.split_fingerprint for r in results)
    notes = []
    for r, (res, point) in enumerate(zip(results, points, strict=True)):
        prefix = f"repeat {r}, " if len(results) > 1 else ""
        notes += [prefix + note for note in _notes(res, point)]
    summary = Summary(first.aggregator, first.label_type, first.label_names, fingerprint, n_boot, level,
                      notes=notes)
    labels = [*first.label_names, MACRO]
    for name in points[0]:
        for j, label in enumerate(labels):
            per_repeat = [point[name][:, 0, j] for point in points]
            values = np.concatenate(per_repeat)
            if np.isnan(values).all():
                continue  # e.g. per-class balanced accuracy of a multi-class task: reported as macro only
            means = np.array([nanmean(v, axis=0) for v in per_repeat])
            mean_draws = nanmean(np.stack([nanmean(d[name][:, :, j], axis=0) for d in draws]), axis=0)
            low, high = percentile_interval(mean_draws, level)
            defined = values[~np.isnan(values)]
            std = float(defined.std(ddof=1)) if len(defined) > 1 else math.nan
            finite = means[~np.isnan(means)]
            spread = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
            summary.rows[(name, label)] = MetricSummary(
                name, label, float(np.mean(finite)), std, low, high, [float(v) for v in values], len(defined),
                spread, len(results))
    return summary


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the defined draws (``nan`` when none is)."""
    draws = draws[~np.isnan(draws)]
    if len(draws) == 0:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _notes(result: CrossValResult, point: Mapping[str, np.ndarray]) -> list[str]:
    notes = []
    if "auroc" not in point:
        return notes
    auroc = point["auroc"][:, 0, :-1]
    for i, fold in enumerate(sorted(result.folds, key=lambda f: f.fold)):
        for j, label in enumerate(result.label_names):
            if np.isnan(auroc[i, j]):
                notes.append(f"fold {fold.fold}: '{label}' has a single class in the test set; skipped")
        if result.label_type != "multiclass":
            y_val = result.targets(fold.val_ids)
            for j, label in enumerate(result.label_names):
                if not choose_threshold(y_val[:, j], fold.val_probs[:, j])[1]:
                    notes.append(f"fold {fold.fold}: '{label}' has a single class in the validation set; "
                                 "balanced accuracy uses threshold 0.5")
    return notes


def _nan(row: Mapping) -> dict:
    """The inverse of :func:`_finite`."""
    def restore(v):
        if v is None:
            return math.nan
        if isinstance(v, list):
            return [restore(x) for x in v]
        return v
    return {k: restore(v) for k, v in row.items()}


def _finite(row: dict) -> dict:
    """JSON has no NaN: undefined values become None."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return {k: clean(v) for k, v in row.items()}
