"""Cross-validation protocol: fresh seeded model per fold, best state restored, deterministic evaluation,
content-addressed fold results."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from clear_bench.builtin import clear_bench_aggregators
from clear_bench.evaluation.bags import pad_bags
from clear_bench.evaluation.bootstrap import summarize
from clear_bench.evaluation.crossval import load_fold, run_crossval
from clear_bench.evaluation.splits import make_splits
from clear_bench.evaluation.synthetic import planted_bags
from clear_bench.evaluation.training import (
    TrainConfig,
    evaluate_loss,
    fold_seed,
    make_loss,
    parameter_digest,
    predict,
    train_fold,
)

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}
OPTIONS = {"hidden_dim": 16, "attention_dim": 16, "dropout": 0.1}


@pytest.fixture(scope="module")
def data():
    bags, labels = planted_bags(60, 24, 8, n_labels=2, n_signal=3, amplitude=3.0, seed=5, n_windows=2)
    splits = make_splits(labels, "multilabel", k=3, seed=0)
    return bags, labels, splits, pad_bags(bags, splits.scan_ids)


def run(data, results_dir=None, folds=None, aggregator="abmil", **config):
    _, labels, splits, padded = data
    settings = {"epochs": 4, "lr": 5e-3, "batch_size": 16, "patience": 4, "max_instances": 16, **config}
    options = OPTIONS if aggregator == "abmil" else {"hidden_dim": 16}
    return run_crossval(padded, labels, "multilabel", ["a", "b"], splits, SPECS[aggregator], options,
                        TrainConfig(**settings), bagset_fingerprint="bags-v1", results_dir=results_dir,
                        folds=folds)


def test_every_fold_starts_from_fresh_seeded_weights_and_nothing_carries_over(data):
    full = run(data)
    digests = [f.init_digest for f in full.folds]
    assert len(set(digests)) == 3  # a new initialisation per fold
    alone = run(data, folds=[2])  # fold 2 without folds 0 and 1 trained beside it
    assert alone.folds[0].init_digest == digests[2]
    # Trained alone or stacked with the other folds: the same result up to float rounding.
    np.testing.assert_allclose(alone.folds[0].test_probs, full.folds[2].test_probs, rtol=1e-5, atol=1e-6)
    assert run(data, seed=1).folds[0].init_digest != digests[0]  # the seed matters


def test_same_initialisation_for_every_encoder(data):
    """Two encoders with bags of the same width get identical initial weights per fold and aggregator."""
    other_bags, _ = planted_bags(60, 24, 8, n_labels=2, seed=99)
    _, labels, splits, _ = data
    other = run_crossval(pad_bags(other_bags, splits.scan_ids), labels, "multilabel", ["a", "b"], splits,
                         SPECS["abmil"], OPTIONS, TrainConfig(epochs=1), bagset_fingerprint="other")
    assert [f.init_digest for f in other.folds] == [f.init_digest for f in run(data, epochs=1).folds]


def test_training_leaves_the_global_rng_alone(data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(data, folds=[0], epochs=1)
    torch.testing.assert_close(torch.rand(3), expected)


def test_evaluation_is_deterministic(data):
    first, second = run(data), run(data)
    for a, b in zip(first.folds, second.folds, strict=True):
        np.testing.assert_array_equal(a.test_probs, b.test_probs)
        np.testing.assert_array_equal(a.val_probs, b.val_probs)
        for x, y in zip(a.attention, b.attention, strict=True):
            np.testing.assert_array_equal(x, y)
    assert summarize(first, n_boot=50).to_dict() == summarize(second, n_boot=50).to_dict()


def test_prediction_uses_whole_bags_without_randomness(data):
    bags, _, splits, padded = data
    torch.manual_seed(0)
    model = SPECS["abmil"].build(8, 2, OPTIONS)
    rows = padded.rows(splits.folds[0].test)
    probs_a, attention_a = predict(model, padded, rows, "multilabel")
    probs_b, attention_b = predict(model, padded, rows, "multilabel", batch_size=3)
    np.testing.assert_allclose(probs_a, probs_b, rtol=1e-5, atol=1e-6)
    assert [len(a) for a in attention_a] == [len(bags[i]) for i in splits.folds[0].test]
    assert len(attention_b) == len(attention_a)


def test_best_state_is_a_deep_copy_of_the_best_epoch(data):
    """Long training on 60 bags overfits: the model returned is the best epoch's, not the last one's."""
    _, labels, splits, padded = data
    targets = torch.from_numpy(np.stack([labels[i] for i in padded.ids]))
    fold = splits.folds[0]
    config = TrainConfig(epochs=30, lr=2e-2, batch_size=8, patience=30, max_instances=None)
    trained = train_fold(lambda: SPECS["abmil"].build(8, 2, OPTIONS), padded, targets, "multilabel", 2,
                         padded.rows(fold.train), padded.rows(fold.val), config, fold_seed(0, 0))
    losses = [c["val_loss"] for c in trained.curve]
    assert len(losses) == 30 and trained.best_epoch == int(np.argmin(losses)) + 1
    assert trained.best_epoch < 30, "the test needs a run whose last epoch is not its best"
    loss_fn = make_loss("multilabel", targets[padded.rows(fold.train)], 2)
    restored = evaluate_loss(trained.model, padded, targets, padded.rows(fold.val), loss_fn, 64)
    assert restored == pytest.approx(min(losses), rel=1e-5)


def test_early_stopping_stops_after_patience(data):
    result = run(data, epochs=40, patience=2, lr=5e-2)
    for fold in result.folds:
        assert len(fold.curve) <= fold.best_epoch + 2
        assert len(fold.curve) < 40 or fold.best_epoch > 37


def test_class_balance_weights():
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    loss = make_loss("multilabel", targets, 2)
    torch.testing.assert_close(loss.pos_weight, torch.tensor([3.0, 1.0]))  # 3 negatives per positive
    classes = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2])
    weights = make_loss("multiclass", classes, 4).weight
    torch.testing.assert_close(weights, torch.tensor([9 / 24, 9 / 8, 9 / 4, 1.0]))  # rare classes weigh more


def test_finished_folds_are_reused_not_retrained(data, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="clear_bench.evaluation.crossval")

    def messages() -> list[str]:
        return [record.getMessage() for record in caplog.records]

    first = run(data, results_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3 and not list(tmp_path.glob(".*tmp"))
    assert not any("reused" in m for m in messages())
    caplog.clear()
    second = run(data, results_dir=tmp_path)
    assert sum("reused" in m for m in messages()) == 3
    for a, b in zip(first.folds, second.folds, strict=True):
        assert a.key == b.key
        np.testing.assert_array_equal(a.test_probs, b.test_probs)
        assert a.curve == b.curve
        for x, y in zip(a.slice_index + a.window_id, b.slice_index + b.window_id, strict=True):
            np.testing.assert_array_equal(x, y)
    caplog.clear()
    run(data, results_dir=tmp_path, lr=1e-2)  # a changed hyper-parameter: new keys
    assert not any("reused" in m for m in messages())
    assert len(list(tmp_path.glob("*.npz"))) == 6


def test_fold_outputs_carry_attention_with_slice_and_window(data, tmp_path):
    bags, _, _, _ = data
    result = run(data, results_dir=tmp_path)
    fold = load_fold(tmp_path / f"{result.folds[0].key}.npz")
    for scan_id, attention, slices, windows in zip(fold.test_ids, fold.attention, fold.slice_index,
                                                   fold.window_id, strict=True):
        np.testing.assert_array_equal(slices, bags[scan_id].slice_index)
        np.testing.assert_array_equal(windows, bags[scan_id].window_id)
        assert attention.shape == slices.shape and attention.sum() == pytest.approx(1.0, abs=1e-5)
    assert fold.test_probs.shape == (len(fold.test_ids), 2)
    assert [c["epoch"] for c in fold.curve] == list(range(1, len(fold.curve) + 1))
    assert set(result.predictions()) == set(bags)


def test_multiclass_cross_validation_end_to_end():
    bags, labels = planted_bags(60, 16, 8, n_labels=3, n_signal=2, amplitude=4.0, prevalence=0.34, seed=2)
    classes = {i: np.array([int(np.argmax(v)) if v.any() else 0]) for i, v in labels.items()}
    splits = make_splits(classes, "multiclass", k=3, seed=0)
    result = run_crossval(pad_bags(bags, splits.scan_ids), classes, "multiclass", ["x", "y", "z"], splits,
                          SPECS["pma"], {"hidden_dim": 16}, TrainConfig(epochs=3, max_instances=8),
                          bagset_fingerprint="mc")
    np.testing.assert_allclose(result.folds[0].test_probs.sum(axis=1), 1.0, rtol=1e-5)
    summary = summarize(result, n_boot=50)
    assert 0.0 <= summary.get("f1_macro").mean <= 1.0
    assert {("auroc", "x"), ("auroc", "macro"), ("balanced_accuracy", "macro")} <= set(summary.rows)


def test_parameter_digest_identifies_weights():
    torch.manual_seed(0)
    model = SPECS["mean-pool"].build(4, 1, {})
    digest = parameter_digest(model)
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1
    assert parameter_digest(model) != digest


def test_rows_in_forked_workers_give_the_serial_results(data, tmp_path):
    """The workers only fill the fold cache with whole rows; each member seeds its own randomness, so the
    process that trains a row does not change a single bit of its results."""
    from functools import partial

    from clear_bench.evaluation.parallel import run_in_workers, worker_count

    _, labels, splits, padded = data
    config = TrainConfig(epochs=4, lr=5e-3, batch_size=16, patience=4, max_instances=16)

    def row(aggregator, results_dir):
        options = OPTIONS if aggregator == "abmil" else {"hidden_dim": 16}
        return partial(run_crossval, padded, labels, "multilabel", ["a", "b"], splits, SPECS[aggregator],
                       options, config, bagset_fingerprint="bags-v1", results_dir=results_dir)

    serial = [row(name, tmp_path / "serial")() for name in ("abmil", "mean-pool")]
    assert worker_count(2, 2) == 2 and worker_count(8, 1) == 1
    run_in_workers([row(name, tmp_path / "parallel") for name in ("abmil", "mean-pool")], 2)
    assert len(list((tmp_path / "parallel").glob("*.npz"))) == 6  # written by the workers
    for expected, name in zip(serial, ("abmil", "mean-pool"), strict=True):
        parallel = row(name, tmp_path / "parallel")()
        for a, b in zip(expected.folds, parallel.folds, strict=True):
            assert a.key == b.key
            np.testing.assert_array_equal(a.test_probs, b.test_probs)
            assert a.curve == b.curve
