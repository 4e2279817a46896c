"""Paired comparisons of rows (encoder + head) evaluated on the same splits, declared before the data are
seen.

Usage::

    pairs = [("lecl + abmil", "hu-reference + abmil", "floor"), ("lecl + abmil", "random + abmil", "twin")]
    comparisons = compare_pairs(results, pairs, metric="auroc", n_boot=30000)
    for c in comparisons:
        c.row, c.reference, c.difference, c.ci_low, c.ci_high, c.p_value, c.p_holm, c.delong
    matrix = all_pairs(results)        # every ordered pair once, Holm over the whole matrix

For each pair the difference ``row - reference`` of the mean-over-folds metric is recomputed on the *same*
patient-level bootstrap resamples for both rows (same patients drawn, within each fold's test set); the
two-sided p-value is the bootstrap share of differences on the far side of zero (never below
``2 / (n_boot + 1)``, :func:`p_floor`), and Holm's step-down correction controls the family-wise error
over the declared family (a pair whose p is undefined is left out of the family). Choosing the reference
on the same data ("best vs rest") would not control it. DeLong's test of the two AUROCs (fast algorithm of
Sun & Xu, 2014) is reported per fold and per label as a cross-check, and combined over folds per label
(folds hold disjoint patients: differences add, variances add). Rows on different splits or labels are
refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    """``row`` against a declared ``reference`` on one metric and label; ``difference = row - reference``."""

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
    kind: str = ""
    """Why the pair is compared: ``floor`` (the non-learned reference), ``twin`` (the random-init twin),
    ``baseline`` (a row the benchmark names), ``pair`` (the all-pairs matrix)."""
    p_floor: float = math.nan
    """The smallest p the resamples can show: a p at the floor means "at most this"."""
    delong: list[DeLongTest] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairedComparison:
        """The comparison ``dataclasses.asdict`` gave (JSON nulls come back as NaN)."""
        def number(value: Any) -> Any:
            return math.nan if value is None else value

        values = {k: number(v) for k, v in data.items() if k != "delong"}
        tests = [DeLongTest(**{k: number(v) for k, v in test.items()}) for test in data.get("delong", [])]
        return cls(**values, delong=tests)


def delong(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[float, float, float, float]:
    """DeLong's test of AUROC(a) = AUROC(b) on the same cases: ``(auc_a, auc_b, z, p)``.

    Needs at least two cases of each class (``nan`` otherwise). Identical scores give ``z = 0, p = 1``;
    a vanishing variance with different AUROCs is undefined (``nan``).
    """
    return _delong(y, scores_a, scores_b)[:4]


def _delong(y: np.ndarray, scores_a: np.ndarray,
            scores_b: np.ndarray) -> tuple[float, float, float, float, float]:
    """``(auc_a, auc_b, z, p, variance of the difference)`` (nans where undefined)."""
    y = np.asarray(y).reshape(-1).astype(bool)
    return _delong_from(_structural(y, scores_a), _structural(y, scores_b))


_Structural = tuple[float, np.ndarray, np.ndarray] | None
"""One score vector's AUROC and DeLong structural components of its positives and negatives (``None``
with fewer than two cases of a class)."""


def _structural(y: np.ndarray, scores: np.ndarray) -> _Structural:
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return None
    scores = np.asarray(scores, float).reshape(-1)
    pos, neg = scores[y], scores[~y]
    tx, ty = rankdata(pos), rankdata(neg)
    tz = rankdata(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() / m - (m + 1) / 2) / n
    return float(auc), (tz[:m] - tx) / n, 1.0 - (tz[m:] - ty) / m


def _delong_from(a: _Structural, b: _Structural) -> tuple[float, float, float, float, float]:
    """DeLong's test from two score vectors' structural components on the same cases."""
    if a is None or b is None:
        return math.nan, math.nan, math.nan, math.nan, math.nan
    m, n = len(a[1]), len(a[2])
    s = np.cov(np.stack([a[1], b[1]])) / m + np.cov(np.stack([a[2], b[2]])) / n
    variance = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    difference = a[0] - b[0]
    if variance <= 1e-15:
        if abs(difference) > 1e-12:  # the AUROCs differ but the variance estimate degenerates: undefined
            return a[0], b[0], math.nan, math.nan, math.nan
        return a[0], b[0], 0.0, 1.0, 0.0
    z = difference / math.sqrt(variance)
    return a[0], b[0], float(z), float(2 * norm.sf(abs(z))), variance


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order. An undefined
    (``nan``) p is no member of the family: it stays ``nan`` and does not enlarge the others."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    order = defined[np.argsort(p[defined], kind="mergesort")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def p_floor(n_boot: int) -> float:
    """The smallest two-sided bootstrap p-value ``n_boot`` resamples can give."""
    return 2.0 / (n_boot + 1)


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


@dataclass
class PairedDraws:
    """Every row's mean-over-folds metric and its values on shared patient resamples (computed once for
    the declared family and the all-pairs matrix alike)."""

    metric: str
    label: str
    n_boot: int
    point: dict[str, float]
    draws: dict[str, np.ndarray]


def paired_draws(results: Mapping[str, CrossValResult | Sequence[CrossValResult]], metric: str = "auroc",
                 label: str = MACRO, n_boot: int = 30000, seed: int = 0,
                 metrics: Sequence[MetricSpec] | None = None) -> PairedDraws:
    """The point values and resampled values of every row on the same patient draws. A row may hold
    several results (repeats on distinct splits): each repeat is resampled within its own folds (seed
    ``seed + r``, the same draws for every row) and the statistic is the mean over repeats."""
    runs = {row: [r] if isinstance(r, CrossValResult) else list(r) for row, r in results.items()}
    repeats = len(next(iter(runs.values())))
    for r in range(repeats):
        check_comparable({row: value[r] for row, value in runs.items()})
    first = next(iter(runs.values()))
    label_names = [*first[0].label_names, MACRO]
    if label not in label_names:
        raise KeyError(f"unknown label '{label}', expected one of {label_names}")
    column = label_names.index(label)
    weights = [bootstrap_weights(first[r], n_boot, seed + r) for r in range(repeats)]
    chosen = _only(metric, metrics)
    point, draws = {}, {}
    for row, repeated in runs.items():
        points, samples = [], []
        for r, result in enumerate(repeated):
            cuts = thresholds(result)
            points.append(nanmean(fold_values(result, None, cuts, chosen)[metric][:, 0, column], axis=0))
            resampled = fold_values(result, weights[r], cuts, chosen)[metric][:, :, column]
            samples.append(nanmean(resampled, axis=0))
        point[row] = float(nanmean(np.asarray(points, dtype=float), axis=0))
        draws[row] = nanmean(np.stack(samples), axis=0)
    return PairedDraws(metric, label, n_boot, point, draws)


def compare_pairs(results: Mapping[str, CrossValResult | Sequence[CrossValResult]],
                  pairs: Sequence[tuple[str, str, str]], metric: str = "auroc", label: str = MACRO,
                  n_boot: int = 30000, seed: int = 0, level: float = 0.95,
                  metrics: Sequence[MetricSpec] | None = None,
                  draws: PairedDraws | None = None) -> list[PairedComparison]:
    """The declared ``(row, reference, kind)`` pairs on shared bootstrap resamples, Holm-corrected over
    the family. ``metric`` is a built-in metric's name or one of ``metrics``; ``draws`` (from
    :func:`paired_draws`) saves recomputing the resamples."""
    pairs = [(row, ref, kind) for row, ref, kind in pairs if row in results and ref in results and row != ref]
    if not pairs:
        return []
    if draws is None:
        needed = {name for pair in pairs for name in pair[:2]}
        draws = paired_draws({r: v for r, v in results.items() if r in needed}, metric, label, n_boot, seed,
                             metrics)

    def first(row: str) -> CrossValResult:
        value = results[row]
        return value if isinstance(value, CrossValResult) else value[0]

    comparisons = []
    auroc = draws.metric == "auroc"
    structurals: dict[int, dict[tuple[str, int], _Structural]] = {}
    for row, reference, kind in pairs:
        differences = draws.draws[row] - draws.draws[reference]
        low, high = percentile_interval(differences, level)
        point = draws.point
        comparisons.append(PairedComparison(
            row, reference, draws.metric, draws.label, point[reference], point[row],
            point[row] - point[reference], low, high, bootstrap_p_value(differences), kind=kind,
            p_floor=p_floor(draws.n_boot),
            delong=_delong_tests(first(row), first(reference), draws.label, structurals) if auroc else [],
        ))
    for comparison, adjusted in zip(comparisons, holm([c.p_value for c in comparisons]), strict=True):
        comparison.p_holm = adjusted
    return comparisons


def all_pairs(results: Mapping[str, CrossValResult | Sequence[CrossValResult]], metric: str = "auroc",
              label: str = MACRO, n_boot: int = 30000, seed: int = 0, level: float = 0.95,
              metrics: Sequence[MetricSpec] | None = None,
              draws: PairedDraws | None = None) -> list[PairedComparison]:
    """Every unordered pair of rows once (``row`` before ``reference`` in the given order), Holm over the
    whole matrix: a secondary, exploratory view beside the declared family (DeLong: repeat 0)."""
    names = list(results)
    pairs = [(a, b, "pair") for i, a in enumerate(names) for b in names[i + 1:]]
    return compare_pairs(results, pairs, metric, label, n_boot, seed, level, metrics, draws)


def _only(name: str, metrics: Sequence[MetricSpec] | None) -> list[MetricSpec]:
    """The one metric spec that is compared (computing the others on every resample is wasted work)."""
    for spec in (*(metrics or ()), *BUILTIN_METRICS):
        if spec.name == name:
            return [spec]
    raise KeyError(f"unknown metric '{name}'")


def _fold_structurals(result: CrossValResult, labels: Sequence[str]) -> dict[tuple[str, int], _Structural]:
    """DeLong structural components of every (label, fold) of a row: computed once per row, shared by every
    pair the row is in."""
    out = {}
    for name in labels:
        j = result.label_names.index(name)
        for fold in result.folds:
            y = result.targets(fold.test_ids)
            y = (y == j) if result.label_type == "multiclass" else y[:, j]
            out[name, fold.fold] = _structural(np.asarray(y).reshape(-1).astype(bool), fold.test_probs[:, j])
    return out


def _delong_tests(reference: CrossValResult, other: CrossValResult, label: str,
                  cache: dict[int, dict[tuple[str, int], _Structural]] | None = None) -> list[DeLongTest]:
    """Per fold and per label (or the one label asked for), plus the combination over folds. ``cache``
    (keyed by ``id`` of the result) keeps each row's structural components across pairs."""
    labels = reference.label_names if label == MACRO else [label]
    cache = {} if cache is None else cache
    for result in (reference, other):
        if id(result) not in cache:
            cache[id(result)] = _fold_structurals(result, labels)
    mine, theirs = cache[id(reference)], cache[id(other)]
    tests = []
    for name in labels:
        total_diff, total_var, aucs = 0.0, 0.0, []
        for fold in sorted(reference.folds, key=lambda f: f.fold):
            auc_a, auc_b, z, p, variance = _delong_from(mine[name, fold.fold], theirs[name, fold.fold])
            tests.append(DeLongTest(fold.fold, name, auc_a, auc_b, z, p))
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


@dataclass(frozen=True)
class EncoderRole:
    """What a row's encoder is, for the comparisons a board declares before seeing any result."""

    label: str
    """The encoder's row label."""
    plugin: str = ""
    """The encoder plugin's name: a random-init entry of the same plugin is a trained entry's twin."""
    reference: bool = False
    random_init: bool = False
    baseline: bool = False
    """Named ``baseline`` in the benchmark: every other row is compared with it."""
    twin_of: str | None = None
    """For a random-init entry: the label of the trained entry it is the twin of (default: every trained
    entry of the same plugin)."""


def declared_pairs(roles: Sequence[EncoderRole], heads: Sequence[str]) -> list[tuple[str, str, str]]:
    """The family a board tests, fixed by the benchmark's design alone: per head, every row against each
    non-learned reference (``floor``), each trained encoder against its random-init twin (``twin``), every
    row against each named baseline (``baseline``). Row names are ``"<encoder> + <head>"``."""
    pairs: list[tuple[str, str, str]] = []
    for head in heads:
        def name(role: EncoderRole, head: str = head) -> str:
            return f"{role.label} + {head}"

        for role in roles:
            if role.reference:
                continue
            pairs += [(name(role), name(floor), "floor") for floor in roles if floor.reference]
            if not role.random_init:
                pairs += [(name(role), name(twin), "twin") for twin in roles
                          if twin.random_init and (twin.twin_of == role.label
                                                   or (twin.twin_of is None and twin.plugin == role.plugin))]
            pairs += [(name(role), name(base), "baseline") for base in roles
                      if base.baseline and base.label != role.label]
    seen: set[tuple[str, str]] = set()
    unique = []
    for row, ref, kind in pairs:
        if (row, ref) not in seen:
            seen.add((row, ref))
            unique.append((row, ref, kind))
    return unique
