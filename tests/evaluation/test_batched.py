"""Many heads trained as one stack give what each head gives trained alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from clear_bench.builtin import clear_bench_aggregators
from clear_bench.evaluation.bags import pad_bags
from clear_bench.evaluation.batched import Member, train_members
from clear_bench.evaluation.crossval import CrossValRun, permute_labels, run_crossvals
from clear_bench.evaluation.ensemble import MemberStreams, member_state, stack_heads
from clear_bench.evaluation.splits import make_splits
from clear_bench.evaluation.synthetic import planted_bags
from clear_bench.evaluation.training import (
    TrainConfig,
    evaluate_loss,
    fold_seed,
    make_loss,
    predict,
    train_fold,
)

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}
OPTIONS = {"abmil": {"hidden_dim": 16, "attention_dim": 8, "dropout": 0.25},
           "pma": {"hidden_dim": 16, "num_heads": 2, "num_seeds": 2, "dropout": 0.25},
           "mean-pool": {"hidden_dim": 16, "dropout": 0.25}}


@pytest.fixture(scope="module")
def task():
    bags, labels = planted_bags(48, 20, 6, n_labels=2, n_signal=3, amplitude=2.5, seed=3)
    # Bags of different lengths, so padding, trimming and instance subsets all matter.
    for index, scan_id in enumerate(sorted(bags)):
        bag = bags[scan_id]
        keep = 12 + index % 9
        bag.embeddings, bag.slice_index, bag.window_id = (bag.embeddings[:keep], bag.slice_index[:keep],
                                                          bag.window_id[:keep])
    splits = make_splits(labels, "multilabel", k=3, seed=0)
    return labels, splits, pad_bags(bags, splits.scan_ids)


def members_of(labels, splits, padded, label_sets):
    out = []
    for targets_of in label_sets:
        rows = [np.asarray(targets_of[i], dtype=np.float32) for i in padded.ids]
        targets = torch.from_numpy(np.stack(rows))
        for index, fold in enumerate(splits.folds):
            out.append(Member(padded.rows(fold.train), padded.rows(fold.val), targets, fold_seed(0, index)))
    return out


@pytest.mark.parametrize("aggregator", ["abmil", "pma", "mean-pool"])
def test_stacked_members_train_like_members_alone(task, aggregator):
    """Folds and label permutations in one stack (dropout, instance subsets, early stopping at different
    epochs) against each member trained on its own: same curves, best epochs and predictions."""
    labels, splits, padded = task
    label_sets = [labels, permute_labels(labels, None, seed=7)]
    members = members_of(labels, splits, padded, label_sets)
    config = TrainConfig(epochs=12, lr=2e-2, batch_size=8, patience=3, max_instances=10)

    def build():
        return SPECS[aggregator].build(6, 2, OPTIONS[aggregator])

    layer = SPECS[aggregator].input_layer
    stacked = train_members(build, members, padded, "multilabel", 2, config, input_layer=layer)
    alone = [train_members(build, [member], padded, "multilabel", 2, config, input_layer=layer)[0]
             for member in members]
    assert len({len(t.curve) for t in stacked}) > 1, "the test needs members that stop at different epochs"
    rows = padded.rows(splits.folds[0].test)
    for together, single in zip(stacked, alone, strict=True):
        assert together.init_digest == single.init_digest
        assert together.best_epoch == single.best_epoch and len(together.curve) == len(single.curve)
        for a, b in zip(together.curve, single.curve, strict=True):
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5, abs=1e-6)
        probs_a, attention_a = predict(together.model, padded, rows, "multilabel")
        probs_b, attention_b = predict(single.model, padded, rows, "multilabel")
        np.testing.assert_allclose(probs_a, probs_b, rtol=1e-5, atol=1e-6)
        for x, y in zip(attention_a, attention_b, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # Members in smaller stacks (memory-bounded chunks) give the same again.
    chunked = train_members(build, members, padded, "multilabel", 2, config, stack_size=4, input_layer=layer)
    for a, b in zip(stacked, chunked, strict=True):
        np.testing.assert_allclose(predict(a.model, padded, rows, "multilabel")[0],
                                   predict(b.model, padded, rows, "multilabel")[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggregator", ["abmil", "pma", "mean-pool"])
def test_standardisation_folded_into_the_input_layer_trains_like_standardised_inputs(task, aggregator):
    """Folding each member's z-score into its input layer's weights (the built-in heads declare
    ``input_layer``) is the same training as standardising every minibatch: same curves and predictions,
    on bags whose dimensions are far from zero mean and unit variance (the two sum in other orders)."""
    labels, splits, padded = task
    shift, scale = torch.linspace(-8.0, 12.0, padded.dim), torch.logspace(-1, 1, padded.dim)
    skewed = replace(padded, x=(padded.x * scale + shift) * padded.mask.unsqueeze(-1))
    skewed.x[0, -1] = float("nan") if not skewed.mask[0, -1] else skewed.x[0, -1]  # padding may hold NaN
    members = members_of(labels, splits, skewed, [labels, permute_labels(labels, None, seed=5)])
    config = TrainConfig(epochs=8, lr=2e-2, batch_size=8, patience=3, max_instances=10)
    spec = SPECS[aggregator]
    assert spec.input_layer == "project.0"

    def build():
        return spec.build(6, 2, OPTIONS[aggregator])

    folded = train_members(build, members, skewed, "multilabel", 2, config, input_layer=spec.input_layer)
    standardised = train_members(build, members, skewed, "multilabel", 2, config)
    rows = skewed.rows(splits.folds[0].test)
    for a, b in zip(folded, standardised, strict=True):
        assert a.best_epoch == b.best_epoch and len(a.curve) == len(b.curve)
        for x, y in zip(a.curve, b.curve, strict=True):
            assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4, abs=1e-6)
            assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(predict(a.model, skewed, rows, "multilabel")[0],
                                   predict(b.model, skewed, rows, "multilabel")[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match=r"not an nn\.Linear"):
        train_members(build, members[:1], skewed, "multilabel", 2, config, input_layer="project.1")


def test_one_stacked_member_is_the_single_head_training(task):
    """Without dropout and instance subsets, the stacked path and the one-module path (torch's AdamW and
    loss modules) are the same algorithm: equal validation curves and best states."""
    labels, splits, padded = task
    targets = torch.from_numpy(np.stack([labels[i] for i in padded.ids]))
    fold = splits.folds[1]
    config = TrainConfig(epochs=6, lr=1e-2, batch_size=8, patience=10, max_instances=None)
    options = {**OPTIONS["abmil"], "dropout": 0.0}

    def build():
        return SPECS["abmil"].build(6, 2, options)

    member = Member(padded.rows(fold.train), padded.rows(fold.val), targets, fold_seed(0, 1))
    stacked = train_members(build, [member], padded, "multilabel", 2, config)[0]
    single = train_fold(build, padded, targets, "multilabel", 2, member.train_rows, member.val_rows, config,
                        member.seed)
    assert stacked.init_digest == single.init_digest
    for a, b in zip(stacked.curve, single.curve, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    loss = make_loss("multilabel", targets[member.train_rows], 2)
    assert evaluate_loss(stacked.model, padded, targets, member.val_rows, loss, 16) == pytest.approx(
        min(c["val_loss"] for c in stacked.curve), rel=1e-5)


def test_multiclass_members_stack(task):
    _, splits, padded = task
    classes = {i: np.array([k % 3]) for k, i in enumerate(padded.ids)}
    targets = torch.tensor([int(classes[i][0]) for i in padded.ids])
    members = [Member(padded.rows(f.train), padded.rows(f.val), targets, fold_seed(0, k))
               for k, f in enumerate(splits.folds)]
    config = TrainConfig(epochs=3, lr=1e-2, batch_size=8, max_instances=10)

    def build():
        return SPECS["pma"].build(6, 3, OPTIONS["pma"])

    stacked = train_members(build, members, padded, "multiclass", 3, config)
    alone = train_members(build, members[2:], padded, "multiclass", 3, config)[0]
    rows = padded.rows(splits.folds[2].test)
    probs = predict(stacked[2].model, padded, rows, "multiclass")[0]
    expected = predict(alone.model, padded, rows, "multiclass")[0]
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_a_row_with_repeats_and_permutations_in_one_call(task, tmp_path):
    """``run_crossvals`` trains every fold of every run together and stores each under its own key; a
    second call reads them all back."""
    labels, splits, padded = task
    other = make_splits(labels, "multilabel", k=3, seed=1)
    runs = [CrossValRun(labels, splits), CrossValRun(labels, other),
            CrossValRun(permute_labels(labels, None, seed=3), splits, "permutation-0")]
    config = TrainConfig(epochs=3, lr=1e-2, batch_size=8, max_instances=10)
    first = run_crossvals(padded, runs, "multilabel", ["a", "b"], SPECS["abmil"], OPTIONS["abmil"], config,
                          bagset_fingerprint="b", results_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 9 and [r.control for r in first] == ["", "", "permutation-0"]
    again = run_crossvals(padded, runs, "multilabel", ["a", "b"], SPECS["abmil"], OPTIONS["abmil"], config,
                          bagset_fingerprint="b", results_dir=tmp_path)
    for a, b in zip(first, again, strict=True):
        for fa, fb in zip(a.folds, b.folds, strict=True):
            assert fa.key == fb.key
            np.testing.assert_array_equal(fa.test_probs, fb.test_probs)
    assert first[0].folds[0].key != first[2].folds[0].key  # permuted labels: another result


def test_member_weights_round_trip_and_unstackable_heads_are_refused():
    torch.manual_seed(0)
    heads = [SPECS["pma"].build(5, 2, OPTIONS["pma"]) for _ in range(3)]
    stacked = stack_heads(heads, MemberStreams([torch.Generator() for _ in heads]))
    for index, head in enumerate(heads):
        state = member_state(stacked, index)
        assert state.keys() == head.state_dict().keys()
        for key, value in head.state_dict().items():
            torch.testing.assert_close(state[key], value)

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(5, 4, 1)

    with pytest.raises(TypeError, match="Conv1d"):
        stack_heads([Conv(), Conv()], MemberStreams([torch.Generator(), torch.Generator()]))
