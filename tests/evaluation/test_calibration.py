"""Calibration metrics (Brier, adaptive-bin ECE) against loop implementations, and reliability diagrams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from clear_bench.atomic import temporaries
from clear_bench.evaluation.bootstrap import summarize
from clear_bench.evaluation.calibration import (
    CALIBRATION_METRICS,
    adaptive_bins,
    brier,
    brier_spec,
    ece_spec,
    expected_calibration_error,
    make_ece_spec,
)
from clear_bench.evaluation.crossval import CrossValResult, FoldResult
from clear_bench.evaluation.metrics import fold_metrics
from clear_bench.evaluation.reliability import fold_curves, reliability_curve, reliability_diagram
from clear_bench.evaluation.training import TrainConfig

# --- loop references ---------------------------------------------------------------------------------


def loop_bins(scores, bins):
    """Bin of each score by the documented rule, written as plain loops."""
    ordered = sorted(float(s) for s in scores)
    n = len(ordered)
    edges = [ordered[math.ceil(k * n / bins) - 1] for k in range(1, bins)]
    return [sum(1 for e in edges if e < s) for s in scores]


def loop_brier(y, p):
    return sum((float(pi) - float(yi)) ** 2 for yi, pi in zip(y, p, strict=True)) / len(y)


def loop_ece(y, p, index):
    """sum over bins of (bin size / n) * |mean y - mean p|, rows given with their bin index."""
    total = 0.0
    for m in set(index):
        rows = [i for i, b in enumerate(index) if b == m]
        mean_y = sum(float(y[i]) for i in rows) / len(rows)
        mean_p = sum(float(p[i]) for i in rows) / len(rows)
        total += len(rows) / len(y) * abs(mean_y - mean_p)
    return total


def repeat(values, counts):
    return [v for v, c in zip(values, counts, strict=True) for _ in range(int(c))]


# --- Brier -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_brier_matches_loop_unweighted_and_with_repeated_rows(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(60) < 0.4
    p = rng.random(60)
    assert brier(y, p) == pytest.approx(loop_brier(y, p), abs=1e-12)
    weights = rng.integers(0, 4, size=(5, 60)).astype(float)
    values = brier(y, p, weights)
    assert values.shape == (5,)
    for b in range(5):
        assert values[b] == pytest.approx(loop_brier(repeat(y, weights[b]), repeat(p, weights[b])), abs=1e-12)
    assert brier(y, p, weights[0]) == pytest.approx(values[0])  # 1-D weights give a float
    assert isinstance(brier(y, p, weights[0]), float)


def test_brier_edge_cases():
    assert brier(np.zeros(4), np.zeros(4)) == 0.0  # one class, predicted with certainty
    assert brier(np.ones(4), np.full(4, 0.5)) == pytest.approx(0.25)
    assert math.isnan(brier(np.ones(3), np.full(3, 0.5), np.zeros(3)))  # no weight
    with pytest.raises(ValueError, match="differ"):
        brier(np.ones(3), np.ones(4))


# --- adaptive bins and ECE ---------------------------------------------------------------------------


def test_adaptive_bins_equal_mass_ties_and_few_rows():
    rng = np.random.default_rng(0)
    scores = rng.permutation(100) / 100.0
    index, k = adaptive_bins(scores, 10)
    assert k == 10
    assert np.bincount(index, minlength=10).tolist() == [10] * 10
    assert (np.diff(index[np.argsort(scores)]) >= 0).all()  # bins are intervals of the score
    assert index.tolist() == loop_bins(scores, 10)
    tied = np.array([0.1] * 6 + [0.2] * 2 + [0.9] * 2)
    index, _ = adaptive_bins(tied, 4)
    assert len(set(index[:6])) == 1 and len(set(index[6:8])) == 1 and len(set(index[8:])) == 1
    assert len(set(index.tolist())) == 3  # ties share a bin: fewer bins than asked
    assert len(set(adaptive_bins(np.array([0.3, 0.1, 0.7]), 10)[0].tolist())) == 3  # fewer rows than bins
    assert set(adaptive_bins(np.full(7, 0.4), 10)[0].tolist()) == {0}  # constant scores: one bin
    with pytest.raises(ValueError):
        adaptive_bins(scores, 0)


@pytest.mark.parametrize("seed", range(4))
def test_ece_matches_loop_unweighted(seed):
    rng = np.random.default_rng(seed)
    n = 83
    y = rng.random(n) < 0.3
    p = np.round(rng.random(n), 1 if seed % 2 else 6)  # rounding makes ties
    assert expected_calibration_error(y, p) == pytest.approx(loop_ece(y, p, loop_bins(p, 10)), abs=1e-12)
    assert expected_calibration_error(y, p, bins=4) == pytest.approx(loop_ece(y, p, loop_bins(p, 4)),
                                                                     abs=1e-12)


def test_ece_without_ties_is_consecutive_chunks_of_sorted_rows():
    rng = np.random.default_rng(5)
    y, p = rng.random(50) < 0.5, rng.random(50)
    order = np.argsort(p)
    expected = sum(abs(y[c].mean() - p[c].mean()) * len(c) / 50 for c in np.split(order, 10))
    assert expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_ece_with_integer_weights_is_repeated_rows_in_the_unweighted_bins(seed):
    rng = np.random.default_rng(seed)
    y, p = rng.random(40) < 0.4, np.round(rng.random(40), 2)
    weights = rng.integers(0, 4, size=(6, 40)).astype(float)
    values = expected_calibration_error(y, p, weights)
    index = loop_bins(p, 10)  # bins come from the unweighted scores, not from the resample
    for b in range(6):
        reps = weights[b]
        assert values[b] == pytest.approx(loop_ece(repeat(y, reps), repeat(p, reps), repeat(index, reps)),
                                          abs=1e-12)


def test_ece_edge_cases():
    assert expected_calibration_error(np.zeros(5), np.zeros(5)) == 0.0  # one class, confidently right
    assert expected_calibration_error(np.zeros(5), np.full(5, 0.3)) == pytest.approx(0.3)
    y = np.array([1, 0, 0, 1, 1, 0, 1, 1])
    assert expected_calibration_error(y, np.full(8, 0.5)) == pytest.approx(abs(y.mean() - 0.5))  # constant
    y3, p3 = np.array([1, 0, 1]), np.array([0.9, 0.2, 0.4])  # 3 rows, 10 bins: every row its own bin
    assert expected_calibration_error(y3, p3) == pytest.approx(np.mean(np.abs(y3 - p3)))
    assert math.isnan(expected_calibration_error(y3, p3, np.zeros(3)))
    assert math.isnan(expected_calibration_error(np.zeros(0), np.zeros(0)))


def test_ece_is_near_zero_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = rng.random(20000) < p
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, p ** 3) > 0.15  # E|p - p^3| = 1/4
    assert brier(y, p) < brier(y, p ** 3)


# --- the specs ---------------------------------------------------------------------------------------


def test_specs_are_lower_is_better_and_listed():
    assert [m.name for m in CALIBRATION_METRICS] == ["brier", "ece"]
    assert CALIBRATION_METRICS[0] is brier_spec and CALIBRATION_METRICS[1] is ece_spec
    assert [m.title for m in CALIBRATION_METRICS] == ["Brier", "ECE"]
    assert not any(m.higher_is_better for m in CALIBRATION_METRICS)
    assert make_ece_spec(5).compute("binary", np.array([[1], [0]]), np.array([[0.6], [0.1]]), [0.5],
                                    None).shape == (1, 2)


def test_multilabel_compute_per_label_and_macro():
    rng = np.random.default_rng(1)
    y = (rng.random((30, 3)) < 0.4).astype(int)
    y[:, 2] = 0  # one class present: still defined
    probs = rng.random((30, 3))
    weights = rng.integers(0, 3, size=(4, 30)).astype(float)
    out = fold_metrics("multilabel", y, probs, [0.5] * 3, weights, CALIBRATION_METRICS)
    assert set(out) == {"brier", "ece"}
    for name, function in (("brier", brier), ("ece", expected_calibration_error)):
        assert out[name].shape == (4, 4)
        assert not np.isnan(out[name]).any()
        for j in range(3):
            np.testing.assert_allclose(out[name][:, j], function(y[:, j], probs[:, j], weights), atol=1e-12)
        np.testing.assert_allclose(out[name][:, 3], out[name][:, :3].mean(axis=1), atol=1e-12)


def test_multiclass_is_one_vs_rest_per_class():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(45, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 3, 45)  # class 3 never occurs
    for spec, function in ((brier_spec, loop_brier), (ece_spec, None)):
        out = spec.compute("multiclass", y, probs, [], None)
        assert out.shape == (1, 5)
        for c in range(4):
            target, p = (y == c).astype(int), probs[:, c]
            expected = function(target, p) if function else loop_ece(target, p, loop_bins(p, 10))
            assert out[0, c] == pytest.approx(expected, abs=1e-12)
        assert out[0, 4] == pytest.approx(out[0, :4].mean())


# --- cross-validation results ------------------------------------------------------------------------


def make_result(label_type: str, n_folds: int = 3, n: int = 60, width: int = 3, seed: int = 0,
                power: float = 1.0) -> CrossValResult:
    """A result with synthetic per-fold probabilities; ``power != 1`` miscalibrates them (p ** power)."""
    rng = np.random.default_rng(seed)
    labels, folds = {}, []
    for f in range(n_folds):
        ids = [f"f{f}-{i:03d}" for i in range(n)]
        if label_type == "multiclass":
            logits = rng.normal(scale=1.5, size=(n, width))
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            y = np.array([rng.choice(width, p=row) for row in probs])
            probs = probs ** power / (probs ** power).sum(axis=1, keepdims=True)
            labels.update({i: np.array([float(c)]) for i, c in zip(ids, y, strict=True)})
        else:
            probs = rng.random((n, width))
            y = (rng.random((n, width)) < probs).astype(float)
            probs = probs ** power
            labels.update({i: row for i, row in zip(ids, y, strict=True)})
        folds.append(FoldResult(f, f"k{f}", ids, probs, ids, probs, [], [], [], [], 1, "", 0.0))
    names = [f"label{j}" for j in range(width)]
    return CrossValResult(names, label_type, labels, {i: i for i in labels}, "split", "bags", "abmil", {},
                          TrainConfig(), folds)


def test_summarize_with_calibration_metrics():
    result = make_result("multilabel", n_folds=2, n=40)
    summary = summarize(result, n_boot=40, seed=0, metrics=CALIBRATION_METRICS)
    brier_row, ece_row = summary.get("brier"), summary.get("ece")
    assert brier_row.n_folds == 2 and 0 <= brier_row.ci_low <= brier_row.mean <= brier_row.ci_high
    # ECE is a sum of |gaps|: resampling adds noise to every gap, so its bootstrap draws sit above the point
    # value on small folds (documented in the module); the interval is still finite and ordered
    assert ece_row.n_folds == 2 and 0 < ece_row.ci_low <= ece_row.ci_high < 1
    assert summary.get("ece", "label0").n_folds == 2


def test_reliability_curves_are_per_fold_then_averaged():
    result = make_result("multilabel", n_folds=2, n=50)
    curves = fold_curves(result, 5)
    assert curves.shape == (2, 2, 5)
    for f, fold in enumerate(result.folds):  # each fold's own pooled scores, never another fold's
        y = result.targets(fold.test_ids).ravel().astype(float)
        p = fold.test_probs.ravel()
        order = np.argsort(p)
        chunks = np.array_split(order, 5)
        np.testing.assert_allclose(curves[f, 0], [p[c].mean() for c in chunks], atol=1e-12)
        np.testing.assert_allclose(curves[f, 1], [y[c].mean() for c in chunks], atol=1e-12)
    x, y = reliability_curve(result, 5)
    np.testing.assert_allclose(x, curves[:, 0].mean(axis=0))
    np.testing.assert_allclose(y, curves[:, 1].mean(axis=0))


def test_reliability_curve_tracks_the_diagonal_when_calibrated():
    x, y = reliability_curve(make_result("multilabel", n_folds=3, n=2000, width=2), 10)
    assert np.abs(x - y).max() < 0.06
    x, y = reliability_curve(make_result("multilabel", n_folds=3, n=2000, width=2, power=3.0), 10)
    assert (y > x).mean() >= 0.8  # p ** 3 under-predicts


@pytest.mark.parametrize("label_type", ["multilabel", "multiclass"])
def test_reliability_diagram_writes_a_png(tmp_path, label_type):
    rows = {"encoder-a / abmil": make_result(label_type, seed=1),
            "encoder-b / mean-pool": make_result(label_type, seed=2, power=2.0),
            "random init": make_result(label_type, seed=3, power=0.5)}
    path = tmp_path / "plots" / f"reliability-{label_type}.png"
    out = reliability_diagram(rows, path, title=f"synthetic {label_type}")
    assert out == path and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
    assert temporaries(path) == []


def test_reliability_diagram_with_twelve_rows(tmp_path):
    rows = {f"encoder-{i:02d} / abmil": make_result("multilabel", n_folds=2, seed=i, power=0.5 + 0.2 * i)
            for i in range(12)}
    path = reliability_diagram(rows, tmp_path / "twelve.png", title="twelve rows")
    with Image.open(path) as image:
        assert image.format == "PNG"


def test_reliability_diagram_refuses_empty_input(tmp_path):
    with pytest.raises(ValueError):
        reliability_diagram({}, tmp_path / "x.png", title="none")
    assert not (tmp_path / "x.png").exists()
