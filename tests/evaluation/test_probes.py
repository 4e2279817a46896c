"""Linear and k-NN probes: the same folds as the MIL heads, fitted on training rows only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clear_bench.builtin import clear_bench_aggregators, clear_bench_metrics
from clear_bench.config import ComponentRef
from clear_bench.evaluation.bags import pad_bags
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.evaluation.crossval import run_crossval
from clear_bench.evaluation.probes import LinearProbe, row_space_basis
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.splits import ensure_splits
from clear_bench.evaluation.synthetic import planted_bags
from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs, evaluate_task
from clear_bench.pipeline.features import FolderBags
from clear_bench.pipeline.plan import PlannedHead

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}
CONFIG = TrainConfig(epochs=2, lr=1e-2, batch_size=8, patience=2)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    bags, labels = planted_bags(60, 12, 6, n_labels=2, n_signal=4, amplitude=2.0, seed=5, n_windows=2)
    ids = sorted(bags)
    splits = ensure_splits(tmp_path_factory.mktemp("splits"), labels, "multilabel", k=3, seed=0,
                           val_fraction=0.2)
    return bags, labels, splits, pad_bags(bags, ids)


def by_hand(bags, ids):
    """Per-window means, window 0 then window 1, straight from the bags."""
    rows = []
    for scan_id in ids:
        bag = bags[scan_id]
        rows.append(np.concatenate([bag.embeddings[bag.window_id == w].astype(np.float64).mean(0)
                                    for w in (0, 1)]))
    return np.stack(rows)


def test_the_linear_probe_is_scikit_learn_on_the_fold_s_training_rows(task, tmp_path: Path) -> None:
    bags, labels, splits, padded = task
    options = {"grid": [0.1]}
    result = run_crossval(padded, labels, "multilabel", ["a", "b"], splits, SPECS["linear-probe"], options,
                          CONFIG, bagset_fingerprint="planted", results_dir=tmp_path)
    for fold in result.folds:
        part = splits.folds[fold.fold]
        train = by_hand(bags, part.train)
        mean, scale = train.mean(0), train.std(0)
        expected = []
        for j in range(2):
            y = np.stack([labels[i] for i in part.train])[:, j]
            model = LogisticRegression(C=0.1, max_iter=500, tol=1e-6, random_state=0)
            model.fit((train - mean) / scale, y)
            expected.append(model.predict_proba((by_hand(bags, part.test) - mean) / scale)[:, 1])
        np.testing.assert_allclose(fold.test_probs, np.stack(expected, axis=1), rtol=1e-5, atol=1e-6)
        assert fold.curve == [] and [len(a) for a in fold.attention] == [12] * len(part.test)


def test_probes_never_see_the_test_or_validation_rows(task) -> None:
    bags, labels, splits, padded = task
    part = splits.folds[0]
    held_out = set(part.test) | set(part.val)
    flipped = {i: (1 - labels[i] if i in held_out else labels[i]) for i in labels}
    spec = SPECS["linear-probe"]
    # Labels of held-out rows: neither the inner search over the grid nor the fit may use them.
    first = run_crossval(padded, labels, "multilabel", ["a", "b"], splits, spec, {}, CONFIG,
                         bagset_fingerprint="planted", folds=[0])
    second = run_crossval(padded, flipped, "multilabel", ["a", "b"], splits, spec, {}, CONFIG,
                          bagset_fingerprint="planted", folds=[0])
    np.testing.assert_array_equal(second.folds[0].test_probs, first.folds[0].test_probs)
    # Features of held-out rows: the standardisation and the fit come from the training rows alone.
    rng = np.random.default_rng(0)
    moved = {i: (type(bag)(rng.normal(5, 3, bag.embeddings.shape).astype(np.float32), bag.slice_index,
                           bag.window_id) if i in held_out else bag) for i, bag in bags.items()}
    third = run_crossval(pad_bags(moved, sorted(moved)), labels, "multilabel", ["a", "b"], splits, spec,
                         {"grid": [0.1]}, CONFIG, bagset_fingerprint="moved", folds=[0])
    train = by_hand(bags, part.train)
    mean, scale = train.mean(0), train.std(0)
    for j in range(2):
        y = np.stack([labels[i] for i in part.train])[:, j]
        model = LogisticRegression(C=0.1, max_iter=500, tol=1e-6, random_state=0)
        model.fit((train - mean) / scale, y)
        expected = model.predict_proba((by_hand(moved, part.test) - mean) / scale)[:, 1]
        np.testing.assert_allclose(third.folds[0].test_probs[:, j], expected, rtol=1e-5, atol=1e-6)


def test_the_knn_probe_votes_among_the_nearest_training_scans(task) -> None:
    bags, labels, splits, padded = task
    result = run_crossval(padded, labels, "multilabel", ["a", "b"], splits, SPECS["knn-probe"], {"k": 5},
                          CONFIG, bagset_fingerprint="planted", folds=[1])
    part = splits.folds[1]
    train, test = by_hand(bags, part.train), by_hand(bags, part.test)
    mean, scale = train.mean(0), train.std(0)
    a, b = (train - mean) / scale, (test - mean) / scale
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    nearest = np.argsort(-(b @ a.T), axis=1, kind="stable")[:, :5]
    y = np.stack([labels[i] for i in part.train])
    np.testing.assert_allclose(result.folds[0].test_probs, y[nearest].mean(axis=1), atol=1e-6)


def test_probe_rows_sit_on_the_board_beside_the_mil_heads(tmp_path: Path) -> None:
    signal, labels = planted_bags(40, 10, 6, n_labels=2, n_signal=None, amplitude=1.0, seed=6)
    noise, _ = planted_bags(40, 10, 4, n_labels=2, amplitude=0.0, seed=7)

    heads = [PlannedHead(ComponentRef(name, name, options), SPECS[name])
             for name, options in (("abmil", {"hidden_dim": 8, "attention_dim": 8}), ("linear-probe", {}),
                                   ("knn-probe", {}))]
    protocol = EvaluationProtocol(folds=3, seed=0, val_fraction=0.2, bootstrap=30, train=CONFIG,
                                  comparison_resamples=200, permutations=2, workers=1)
    result = evaluate_task(TaskInputs("task", "multilabel", ["a", "b"], labels),
                           [FolderBags("floor", "in memory", noise, "memory-floor",
                                       EncoderRole("floor", reference=True)),
                            FolderBags("signal", "in memory", signal, "memory-signal",
                                       EncoderRole("signal"))],
                           heads, protocol, clear_bench_metrics(), tmp_path)
    auroc = {(row.encoder, row.aggregator): row.summary.get("auroc").mean for row in result.board.rows}
    assert auroc["signal", "linear-probe"] > 0.9 and auroc["signal", "knn-probe"] > 0.8
    assert abs(auroc["floor", "linear-probe"] - 0.5) < 0.2
    nulls = {row.aggregator: row.null for row in result.board.rows if row.encoder == "signal"}
    assert nulls["linear-probe"].permutations == 2 and nulls["linear-probe"].p_value <= 1 / 3 + 1e-9
    floor_pairs = [c for c in result.board.comparisons
                   if c.row == "signal + linear-probe" and c.kind == "floor"]
    assert floor_pairs and floor_pairs[0].reference == "floor + linear-probe"


@pytest.mark.parametrize("label_type", ["multilabel", "multiclass"])
def test_wide_features_are_fitted_in_the_training_rows_span_with_the_same_predictions(label_type) -> None:
    rng = np.random.default_rng(3)
    n, d = 40, 300  # more features than rows, as 1152-d embeddings x 3 windows against ~100 scans
    x = rng.normal(size=(n, 8)) @ rng.normal(size=(8, d)) + 0.3 * rng.normal(size=(n, d))
    test = rng.normal(size=(15, 8)) @ rng.normal(size=(8, d)) + 0.3 * rng.normal(size=(15, d))
    y = (rng.integers(0, 3, n) if label_type == "multiclass"
         else (x[:, :2] + rng.normal(size=(n, 2)) > 0).astype(float))
    basis = row_space_basis(x)
    assert basis.shape == (d, n)
    np.testing.assert_allclose(basis.T @ basis, np.eye(n), atol=1e-10)
    probe = LinearProbe(grid=[0.05]).fit(x, y, label_type)
    xs, ts = probe.standardize(x), probe.standardize(test)
    if label_type == "multiclass":
        full = LogisticRegression(C=0.05, max_iter=5000, tol=1e-10).fit(xs, y).predict_proba(ts)
    else:
        full = np.stack([LogisticRegression(C=0.05, max_iter=5000, tol=1e-10).fit(xs, y[:, j])
                         .predict_proba(ts)[:, 1] for j in range(2)], axis=1)
    np.testing.assert_allclose(probe.predict(test), full, atol=1e-4)
    assert row_space_basis(x[:, :30]) is None  # as many rows as features: fitted as they are


def test_a_class_missing_from_an_inner_training_fold_is_scored_not_a_crash() -> None:
    """Multi-class with one scan of the highest class: the inner fold that tests it trains without it, so
    that fold's probabilities must still span every class (a small cohort's staging hit this)."""
    rng = np.random.default_rng(0)
    classes = np.array([0, 1] * 14 + [2])
    features = rng.normal(size=(len(classes), 5)) + classes[:, None]
    probe = LinearProbe(grid=[0.1, 1.0], inner_folds=3).fit(features, classes, "multiclass")
    probs = probe.predict(features)
    assert probs.shape == (len(classes), 3) and probe.chosen in (0.1, 1.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert (probs[:28].argmax(axis=1) == classes[:28]).mean() > 0.8  # it still learns the common classes
