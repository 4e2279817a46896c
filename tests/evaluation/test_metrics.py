"""Metrics against scikit-learn, the patient bootstrap's coverage, DeLong, Holm and paired comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)

from clear_bench.evaluation.bootstrap import bootstrap_weights, summarize
from clear_bench.evaluation.compare import all_pairs, compare_pairs, delong, holm
from clear_bench.evaluation.crossval import CrossValResult, FoldResult
from clear_bench.evaluation.metrics import (
    auprc,
    auroc,
    balanced_accuracy,
    choose_threshold,
    fold_metrics,
    multiclass_balanced_accuracy,
    multiclass_f1_macro,
)
from clear_bench.evaluation.splits import SplitMismatchError
from clear_bench.evaluation.training import TrainConfig


def result_from(fold_probs, fold_labels, label_type="binary", label_names=None, val=None, split="fp",
                patient_of=None) -> CrossValResult:
    """A cross-validation result built from given per-fold test probabilities (no training)."""
    labels, folds = {}, []
    for f, (probs, y) in enumerate(zip(fold_probs, fold_labels, strict=True)):
        ids = [f"f{f}-{i:03d}" for i in range(len(probs))]
        labels.update({i: np.atleast_1d(v).astype(float) for i, v in zip(ids, y, strict=True)})
        val_probs, val_ids = (probs, ids) if val is None else val
        folds.append(FoldResult(f, f"k{f}", ids, np.asarray(probs, float).reshape(len(ids), -1), val_ids,
                                np.asarray(val_probs, float).reshape(len(val_ids), -1), [], [], [], [], 1, "",
                                0.0))
    width = np.atleast_2d(next(iter(fold_probs))).shape[-1] if label_type == "multiclass" else \
        len(next(iter(labels.values())))
    names = label_names or [f"label{j}" for j in range(width)]
    return CrossValResult(names, label_type, labels, patient_of or {i: i for i in labels}, split, "bags",
                          "abmil", {}, TrainConfig(), folds)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_auprc_balanced_accuracy_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(80) < 0.3
    scores = np.round(rng.random(80) + 0.4 * y, 1)  # rounding makes ties
    weights = rng.integers(0, 4, 80).astype(float)
    assert auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert auroc(y, scores, weights) == pytest.approx(
        roc_auc_score(y, scores, sample_weight=weights), abs=1e-12)
    assert auprc(y, scores) == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    assert auprc(y, scores, weights) == pytest.approx(
        average_precision_score(y, scores, sample_weight=weights), abs=1e-12)
    assert balanced_accuracy(y, scores, 0.7) == pytest.approx(balanced_accuracy_score(y, scores >= 0.7))
    batch = np.stack([weights, np.ones(80)])
    np.testing.assert_allclose(auroc(y, scores, batch), [auroc(y, scores, weights), auroc(y, scores)])


def test_multiclass_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 120)
    logits = rng.normal(size=(120, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert multiclass_f1_macro(y, probs) == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    predicted = probs.argmax(1)
    assert multiclass_balanced_accuracy(y, probs) == pytest.approx(balanced_accuracy_score(y, predicted))
    values = fold_metrics("multiclass", y, probs, [])
    ovr = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert values["auroc"][0, -1] == pytest.approx(ovr)
    for c in range(4):
        assert values["auroc"][0, c] == pytest.approx(roc_auc_score(y == c, probs[:, c]))


def test_weighted_metric_equals_metric_of_the_explicit_resample():
    rng = np.random.default_rng(4)
    y = rng.random(40) < 0.5
    scores = rng.random(40)
    draw = rng.integers(0, 40, 40)
    counts = np.bincount(draw, minlength=40).astype(float)
    assert auroc(y, scores, counts) == pytest.approx(roc_auc_score(y[draw], scores[draw]))
    assert auprc(y, scores, counts) == pytest.approx(average_precision_score(y[draw], scores[draw]))


def test_many_resample_auroc_equals_each_resample_computed_alone():
    """The pair-matrix path (many resamples at once) gives, bit for bit, each resample's own AUROC, ties,
    empty resamples and one-class resamples included."""
    rng = np.random.default_rng(7)
    for n in (3, 17, 40):
        y = rng.random(n) < 0.4
        y[:2] = [True, False]
        scores = np.round(rng.random(n), 1)  # many ties
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=300).astype(float)
        counts[0] = 0.0
        counts[1] = np.where(y, 0.0, 1.0)  # negatives only
        together = auroc(y, scores, counts)
        alone = np.array([auroc(y, scores, row) for row in counts])
        np.testing.assert_array_equal(together, alone)
        assert np.isnan(together[:2]).all() and np.isfinite(together).sum() > 200


def test_single_class_label_is_skipped_not_faked():
    y = np.array([[1, 0], [1, 1], [1, 0], [1, 1]])
    probs = np.array([[0.2, 0.9], [0.4, 0.8], [0.6, 0.1], [0.8, 0.7]])
    assert math.isnan(auroc(y[:, 0], probs[:, 0]))
    values = fold_metrics("multilabel", y, probs, [0.5, 0.5])
    assert math.isnan(values["auroc"][0, 0])
    assert values["auroc"][0, -1] == pytest.approx(roc_auc_score(y[:, 1], probs[:, 1]))
    rng = np.random.default_rng(0)
    fold_y = [rng.integers(0, 2, (30, 2)) for _ in range(3)]
    fold_y[1][:, 0] = 0  # label0 has no positive in fold 1's test set
    result = result_from([rng.random((30, 2)) for _ in range(3)], fold_y, "multilabel")
    summary = summarize(result, n_boot=100)
    row = summary.get("auroc", "label0")
    assert row.n_folds == 2 and math.isnan(row.fold_values[1])
    assert any("fold 1" in note and "label0" in note for note in summary.notes)


def test_threshold_is_chosen_on_validation_data():
    y_val = np.array([0, 0, 0, 1, 1, 1])
    s_val = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    threshold, chosen = choose_threshold(y_val, s_val)
    assert chosen and 0.3 < threshold < 0.6
    assert choose_threshold(np.ones(3), np.arange(3.0)) == (0.5, False)


def test_bootstrap_ci_covers_the_true_auroc_at_its_nominal_rate():
    """Binormal scores with a known AUROC, five folds of 60 patients, 150 repetitions."""
    separation = 1.0
    true_auc = norm.cdf(separation / math.sqrt(2))
    rng = np.random.default_rng(11)
    covered = 0
    repetitions = 150
    for rep in range(repetitions):
        fold_y = [rng.random(60) < 0.4 for _ in range(5)]
        fold_s = [rng.normal(size=60) + separation * y for y in fold_y]
        summary = summarize(result_from(fold_s, fold_y), n_boot=400, seed=rep)
        auc = summary.get("auroc")
        covered += auc.ci_low <= true_auc <= auc.ci_high
    assert 0.88 <= covered / repetitions <= 0.99, covered / repetitions


def test_bootstrap_resamples_whole_patients_within_each_fold():
    patient_of = {f"f0-{i:03d}": f"p{i // 2}" for i in range(10)}  # two scans per patient
    patient_of |= {f"f1-{i:03d}": f"q{i}" for i in range(10)}
    rng = np.random.default_rng(0)
    result = result_from([rng.random(10), rng.random(10)], [np.arange(10) % 2, np.arange(10) % 2],
                         patient_of=patient_of)
    weights = bootstrap_weights(result, 50, seed=0)
    assert [w.shape for w in weights] == [(50, 10), (50, 10)]
    np.testing.assert_array_equal(weights[0][:, 0::2], weights[0][:, 1::2])  # both scans of a patient
    np.testing.assert_array_equal(weights[0].sum(axis=1), 10)  # resampled within the fold only
    np.testing.assert_array_equal(weights[1].sum(axis=1), 10)


def brute_force_delong(y, a, b):
    """DeLong's variance from placement values computed pair by pair (O(m n))."""
    pos, neg = y.astype(bool), ~y.astype(bool)

    def placements(s):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(axis=1), psi.mean(axis=0), psi.mean()

    va, wa, auc_a = placements(a)
    vb, wb, auc_b = placements(b)
    s10 = np.cov(np.stack([va, vb]))
    s01 = np.cov(np.stack([wa, wb]))
    s = s10 / pos.sum() + s01 / neg.sum()
    z = (auc_a - auc_b) / math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return auc_a, auc_b, z


def test_fast_delong_matches_the_pairwise_definition():
    rng = np.random.default_rng(3)
    y = rng.random(90) < 0.4
    a = np.round(rng.normal(size=90) + y, 1)
    b = np.round(rng.normal(size=90) + 0.5 * y + 0.5 * a, 1)
    auc_a, auc_b, z, p = delong(y, a, b)
    expected = brute_force_delong(y, a, b)
    assert (auc_a, auc_b, z) == pytest.approx(expected)
    assert auc_a == pytest.approx(roc_auc_score(y, a))
    assert p == pytest.approx(2 * norm.sf(abs(z)))
    assert delong(y, a, a)[2:] == (0.0, 1.0)


def test_holm_adjustment():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.2]), [0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    # an undefined p is no member of the family: it stays undefined and does not enlarge the others
    adjusted = holm([0.01, math.nan, 0.03])
    assert math.isnan(adjusted[1])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.03)


def test_delong_with_a_degenerate_variance_but_different_aurocs_is_undefined():
    y = np.array([0, 0, 1, 1])
    auc_a, auc_b, z, p = delong(y, np.array([0.1, 0.2, 0.8, 0.9]), np.array([0.9, 0.8, 0.2, 0.1]))
    assert auc_a == 1.0 and auc_b == 0.0 and math.isnan(z) and math.isnan(p)


def test_paired_comparison_finds_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(5)
    fold_y = [rng.random(80) < 0.5 for _ in range(5)]
    noise = [rng.normal(size=80) for _ in range(5)]
    strong = result_from([n + 2.0 * y for n, y in zip(noise, fold_y, strict=True)], fold_y)
    same = result_from([n + 2.0 * y + 1e-3 * rng.normal(size=80) for n, y in zip(noise, fold_y, strict=True)],
                       fold_y)
    weak = result_from([rng.normal(size=80) + 0.5 * y for y in fold_y], fold_y)
    results = {"strong": strong, "same": same, "weak": weak}
    comparisons = compare_pairs(results, [("weak", "strong", "baseline"), ("same", "strong", "baseline")],
                                n_boot=500)
    by_row = {c.row: c for c in comparisons}
    assert set(by_row) == {"same", "weak"} and all(c.reference == "strong" for c in comparisons)
    assert by_row["weak"].p_value < 0.01 and by_row["weak"].ci_high < 0  # weak is worse: row - reference
    assert by_row["same"].p_value > 0.05 and by_row["same"].ci_low <= 0 <= by_row["same"].ci_high
    assert all(c.p_holm >= c.p_value for c in comparisons)
    assert by_row["weak"].p_floor == pytest.approx(2 / 501)
    matrix = all_pairs(results, n_boot=500)
    expected = {("strong", "same"), ("strong", "weak"), ("same", "weak")}
    assert {(c.row, c.reference) for c in matrix} == expected
    combined = [t for t in by_row["weak"].delong if t.fold == -1]
    assert combined and combined[0].p_value < 0.01
    assert len([t for t in by_row["weak"].delong if t.fold >= 0]) == 5


def test_comparison_refuses_rows_on_different_splits():
    rng = np.random.default_rng(0)
    a = result_from([rng.random(20)], [np.arange(20) % 2], split="one")
    b = result_from([rng.random(20)], [np.arange(20) % 2], split="two")
    with pytest.raises(SplitMismatchError):
        compare_pairs({"a": a, "b": b}, [("a", "b", "pair")])
