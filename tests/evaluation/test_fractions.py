"""Label-efficiency curves: fewer training patients per fold, nested and stratified, never a test patient;
each curve row on the board with its plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from clear_bench.builtin import clear_bench_aggregators, clear_bench_metrics
from clear_bench.config import ComponentRef
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.evaluation.fractions import efficiency_area, fraction_splits, nested_order
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.splits import make_splits
from clear_bench.evaluation.synthetic import planted_bags
from clear_bench.leaderboard import render_task_board
from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs, evaluate_task
from clear_bench.pipeline.features import FolderBags
from clear_bench.pipeline.plan import PlannedHead

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}


@pytest.fixture(scope="module")
def cohort():
    """120 scans of 60 patients (two scans each), a binary label with 30% positives."""
    rng = np.random.default_rng(3)
    patients = {f"p{i:03d}": float(rng.random() < 0.3) for i in range(60)}
    patient_of = {f"{p}-s{k}": p for p in patients for k in range(2)}
    labels = {scan: np.array([patients[p]], np.float32) for scan, p in patient_of.items()}
    return labels, patient_of, make_splits(labels, "binary", k=5, seed=0, patient_of=patient_of)


def _patients(scans, patient_of):
    return {patient_of[s] for s in scans}


def test_fractions_cut_training_patients_only_and_nest(cohort) -> None:
    labels, patient_of, splits = cohort
    for draw in range(3):
        smaller = None
        for fraction in (0.1, 0.25, 0.5):
            cut = fraction_splits(splits, labels, "binary", fraction, draw)
            assert cut.fingerprint != splits.fingerprint
            for full, part in zip(splits.folds, cut.folds, strict=True):
                assert part.test == full.test  # the test fold is never touched
                assert set(part.train) <= set(full.train) and set(part.val) <= set(full.val)
                for kept, source in ((part.train, full.train), (part.val, full.val)):
                    chosen = _patients(kept, patient_of)
                    assert set(kept) == {s for s in source if patient_of[s] in chosen}  # whole patients
                n_train = len(_patients(full.train, patient_of))
                assert len(_patients(part.train, patient_of)) == max(2, math.ceil(fraction * n_train))
            if smaller is not None:
                for small, large in zip(smaller.folds, cut.folds, strict=True):
                    assert set(small.train) <= set(large.train) and set(small.val) <= set(large.val)
            smaller = cut
    assert fraction_splits(splits, labels, "binary", 1.0, 0) is splits
    one = fraction_splits(splits, labels, "binary", 0.25, 0)
    other = fraction_splits(splits, labels, "binary", 0.25, 1)
    assert one.folds[0].train != other.folds[0].train  # draws differ
    assert fraction_splits(splits, labels, "binary", 0.25, 1) == other  # and are reproducible


def test_every_prefix_of_the_order_holds_each_stratum_in_proportion() -> None:
    patients = [f"p{i:03d}" for i in range(100)]
    strata = {p: "pos" if i < 20 else "neg" for i, p in enumerate(patients)}
    order = nested_order(patients, strata, np.random.default_rng(0))
    assert sorted(order) == patients
    for size in (5, 10, 25, 50):
        positives = sum(strata[p] == "pos" for p in order[:size])
        assert abs(positives - 0.2 * size) <= 1, (size, positives)


def test_the_area_weighs_fractions_on_a_log_scale() -> None:
    assert efficiency_area([0.1, 1.0], [0.6, 0.8]) == pytest.approx(0.7)
    assert efficiency_area([0.01, 0.1, 1.0], [0.5, 0.9, 0.9]) == pytest.approx(0.8)
    assert math.isnan(efficiency_area([1.0], [0.8]))


def test_curve_rows_reach_the_board(tmp_path: Path) -> None:
    signal, labels = planted_bags(60, 10, 6, n_labels=2, n_signal=None, amplitude=1.0, seed=6)
    heads = [PlannedHead(ComponentRef(name, name, {}), SPECS[name]) for name in ("linear-probe", "knn-probe")]
    protocol = EvaluationProtocol(
        folds=3, seed=0, val_fraction=0.2, bootstrap=30, train=TrainConfig(epochs=2, batch_size=8),
        comparison_resamples=200, permutations=0, workers=1, train_fractions=(0.2, 0.5, 1.0),
        fraction_draws=2, fraction_heads=("linear-probe",))
    source = FolderBags("signal", "in memory", signal, "memory-signal", EncoderRole("signal"))
    result = evaluate_task(TaskInputs("task", "multilabel", ["a", "b"], labels), [source], heads, protocol,
                           clear_bench_metrics(), tmp_path)
    rows = {row.aggregator: row for row in result.board.rows}
    assert rows["knn-probe"].efficiency == []
    curve = rows["linear-probe"].efficiency
    assert [p.fraction for p in curve] == [0.2, 0.5, 1.0] and [p.draws for p in curve] == [2, 2, 1]
    assert curve[0].patients < curve[1].patients < curve[2].patients == 40
    assert curve[-1].mean == rows["linear-probe"].summary.get("auroc").mean
    assert all(p.ci_low <= p.mean <= p.ci_high for p in curve)
    assert curve[-1].mean > 0.8
    board = render_task_board(result.board, benchmark="b", version="v")
    section = board.split("## Label efficiency")[1]
    assert "| signal | linear-probe | " in section and "knn-probe" not in section.split("##")[0]
    assert len(list((tmp_path / "folds").glob("*.npz"))) == 3 + 3 * 2 * 2 + 3  # full + 2 fractions x 2 draws
