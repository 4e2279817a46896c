"""Splits: patient-level, stratified (multi-label aware), fingerprinted, saved once and reused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clear_bench.errors import DataError
from clear_bench.evaluation.splits import (
    SplitMismatchError,
    assignment_fingerprint,
    ensure_splits,
    iterative_stratification,
    load_splits,
    make_splits,
    require_same_splits,
    split_fingerprint,
)


def multilabel(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"s{i:03d}": (rng.random(4) < [0.5, 0.2, 0.1, 0.04]).astype(np.float32) for i in range(n)}


def test_folds_partition_scans_and_train_val_test_are_disjoint():
    labels = multilabel()
    splits = make_splits(labels, "multilabel", k=5, seed=0)
    tests = [set(f.test) for f in splits.folds]
    assert set().union(*tests) == set(labels)
    assert sum(len(t) for t in tests) == len(labels)
    for fold in splits.folds:
        train, val, test = set(fold.train), set(fold.val), set(fold.test)
        assert not (train & val) and not (train & test) and not (val & test)
        assert train | val | test == set(labels)
        assert 0.15 < len(val) / (len(train) + len(val)) < 0.25


def test_no_patient_in_two_folds_when_patients_have_several_scans():
    rng = np.random.default_rng(1)
    labels, patient_of = {}, {}
    for p in range(60):
        y = (rng.random(3) < 0.3).astype(np.float32)
        for s in range(int(rng.integers(1, 4))):
            labels[f"p{p}-scan{s}"] = y
            patient_of[f"p{p}-scan{s}"] = f"p{p}"
    splits = make_splits(labels, "multilabel", k=5, seed=0, patient_of=patient_of)
    for fold in splits.folds:
        parts = [{patient_of[s] for s in fold.train}, {patient_of[s] for s in fold.val},
                 {patient_of[s] for s in fold.test}]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    fold_of_patient: dict[str, set[int]] = {}
    for fold in splits.folds:
        for s in fold.test:
            fold_of_patient.setdefault(patient_of[s], set()).add(fold.index)
    assert all(len(folds) == 1 for folds in fold_of_patient.values())


def test_every_label_is_stratified_across_folds():
    labels = multilabel(300)
    splits = make_splits(labels, "multilabel", k=5, seed=3)
    totals = np.sum(list(labels.values()), axis=0)
    for fold in splits.folds:
        counts = np.sum([labels[s] for s in fold.test], axis=0)
        # Each fold holds its fair share of every label, the rarest (12 positives) included, within one.
        assert np.all(np.abs(counts - totals / 5) <= 1.0 + 1e-9), (counts, totals / 5)


def test_binary_and_multiclass_balance_every_class():
    rng = np.random.default_rng(2)
    binary = {f"s{i}": np.array([float(rng.random() < 0.15)]) for i in range(103)}
    classes = {f"s{i}": np.array([int(rng.integers(0, 4))]) for i in range(97)}
    for labels, kind in ((binary, "binary"), (classes, "multiclass")):
        splits = make_splits(labels, kind, k=5, seed=0)
        values = sorted({int(v[0]) for v in labels.values()})
        for value in values:
            total = sum(int(v[0]) == value for v in labels.values())
            per_fold = [sum(int(labels[s][0]) == value for s in f.test) for f in splits.folds]
            assert max(per_fold) - min(per_fold) <= 1, (kind, value, per_fold, total)


def test_iterative_stratification_honours_ratios():
    rng = np.random.default_rng(0)
    targets = rng.random((500, 3)) < [0.5, 0.1, 0.02]
    subset = iterative_stratification(targets, [0.8, 0.2], rng)
    assert abs(np.mean(subset == 1) - 0.2) < 0.01
    for j in range(3):
        assert abs(targets[subset == 1, j].sum() - 0.2 * targets[:, j].sum()) <= 1.0


def test_same_inputs_same_splits_and_fingerprint_and_file(tmp_path):
    """Every encoder of a task asks for the splits with the same labels: one file, one fingerprint."""
    labels = multilabel()
    first = ensure_splits(tmp_path, labels, "multilabel", k=5, seed=0)
    files = list(tmp_path.glob("splits-*.json"))
    assert [p.name for p in files] == [f"splits-{first.request}.json"]
    for _encoder in ("encoder-a", "encoder-b"):
        again = ensure_splits(tmp_path, dict(reversed(list(labels.items()))), "multilabel", k=5, seed=0)
        assert again == first
    assert make_splits(labels, "multilabel", k=5, seed=0) == first
    assert load_splits(files[0]) == first
    assert first.request == split_fingerprint(labels, "multilabel", 5, 0)
    assert first.fingerprint == assignment_fingerprint(first.folds, first.patient_of)


def test_fingerprint_changes_with_what_determines_the_split():
    labels = multilabel()
    base = split_fingerprint(labels, "multilabel", 5, 0)
    flipped = dict(labels)
    flipped["s000"] = 1 - flipped["s000"]
    assert split_fingerprint(flipped, "multilabel", 5, 0) != base
    assert split_fingerprint(labels, "multilabel", 4, 0) != base
    assert split_fingerprint(labels, "multilabel", 5, 1) != base
    assert split_fingerprint(labels, "multilabel", 5, 0, val_fraction=0.3) != base
    assert split_fingerprint(labels, "binary", 5, 0) != base
    assert split_fingerprint({k: v for k, v in labels.items() if k != "s001"}, "multilabel", 5, 0) != base
    assert make_splits(labels, "multilabel", seed=1).folds != make_splits(labels, "multilabel", seed=0).folds


def test_saved_file_is_valid_json_written_atomically(tmp_path):
    splits = ensure_splits(tmp_path, multilabel(50), "multilabel", k=5)
    data = json.loads((tmp_path / f"splits-{splits.request}.json").read_text())
    assert data["fingerprint"] == splits.fingerprint and len(data["folds"]) == 5
    assert not list(tmp_path.glob(".*.tmp"))


def test_damaged_split_file_is_a_clear_error(tmp_path):
    labels = multilabel(30)
    fingerprint = split_fingerprint(labels, "multilabel", 5, 0)
    (tmp_path / f"splits-{fingerprint}.json").write_text("{not json")
    with pytest.raises(DataError, match=f"splits-{fingerprint}.json"):
        ensure_splits(tmp_path, labels, "multilabel")


def test_the_fingerprint_is_that_of_the_fold_assignment_and_an_edited_file_is_refused(tmp_path):
    labels = multilabel(40)
    splits = ensure_splits(tmp_path, labels, "multilabel", k=4)
    other_seed = make_splits(labels, "multilabel", k=4, seed=3)
    assert other_seed.folds != splits.folds and other_seed.fingerprint != splits.fingerprint
    path = tmp_path / f"splits-{splits.request}.json"
    data = json.loads(path.read_text())
    moved = data["folds"][0]["test"].pop()
    data["folds"][1]["test"].append(moved)  # a scan moved to another fold, fingerprint left as it was
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="the folds it holds hash to"):
        ensure_splits(tmp_path, labels, "multilabel", k=4)


def test_leaderboard_refuses_rows_on_different_splits():
    assert require_same_splits({"a": "f1", "b": "f1"}) == "f1"
    with pytest.raises(SplitMismatchError) as error:
        require_same_splits({"a": "f1", "b": "f2", "c": "f1"})
    assert any("f2: b" in line for line in error.value.lines)


def test_too_few_patients_and_bad_mapping():
    with pytest.raises(DataError, match="patients"):
        make_splits(multilabel(3), "multilabel", k=5)
    with pytest.raises(DataError, match="patient mapping"):
        make_splits(multilabel(10), "multilabel", k=2, patient_of={"s000": "p"})
