"""Train on task A, test on task B: a signal B shares with A carries over, B's shuffled labels land near
chance, and no patient of B is ever trained on (not even one that A also has)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clear_bench.builtin import clear_bench_aggregators, clear_bench_metrics
from clear_bench.config import ComponentRef
from clear_bench.errors import UserError
from clear_bench.evaluation.compare import EncoderRole
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.synthetic import planted_bags
from clear_bench.evaluation.transfer import TEST, TRAIN, training_scans, transfer_split
from clear_bench.leaderboard import render_transfer_board
from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs
from clear_bench.pipeline.features import FolderBags
from clear_bench.pipeline.plan import PlannedHead
from clear_bench.pipeline.report import transfer_files
from clear_bench.pipeline.transfer import evaluate_transfer

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}
SMALL_ABMIL = {"hidden_dim": 16, "attention_dim": 8, "dropout": 0.0}
SHARED = 10
"""B's first scans belong to patients A also has."""


@pytest.fixture(scope="module")
def cohorts():
    """One planted signal drawn for 200 bags: the first 100 are task A, the other 100 task B (own ids and
    patients, but the first ``SHARED`` of B are patients of A)."""
    bags, labels = planted_bags(200, 8, 6, n_labels=1, n_signal=None, amplitude=1.0, seed=9)
    ids = sorted(bags)
    a_ids, b_ids = ids[:100], ids[100:]
    a = ({i: bags[i] for i in a_ids}, {i: labels[i] for i in a_ids}, {i: f"patient-{i}" for i in a_ids})
    b_bags = {f"b-{k:03d}": bags[i] for k, i in enumerate(b_ids)}
    b_labels = {f"b-{k:03d}": labels[i] for k, i in enumerate(b_ids)}
    b_patients = {f"b-{k:03d}": f"patient-{a_ids[k]}" if k < SHARED else f"patient-b{k}" for k in range(100)}
    return a, (b_bags, b_labels, b_patients)


def _transfer(a, b, tmp_path: Path, labels_b=None):
    heads = [PlannedHead(ComponentRef("linear-probe", "linear-probe", {}), SPECS["linear-probe"]),
             PlannedHead(ComponentRef("abmil", "abmil", SMALL_ABMIL), SPECS["abmil"])]
    protocol = EvaluationProtocol(folds=5, seed=0, val_fraction=0.2, bootstrap=200,
                                  train=TrainConfig(epochs=15, patience=5, batch_size=16, lr=5e-3),
                                  permutations=0, workers=1)
    train = TaskInputs("task-a", "binary", ["finding"], a[1], a[2])
    test = TaskInputs("task-b", "binary", ["finding"], labels_b or b[1], b[2])
    sources_a = [FolderBags("signal", "in memory", a[0], "memory-a", EncoderRole("signal"))]
    sources_b = [FolderBags("signal", "in memory", b[0], "memory-b", EncoderRole("signal"))]
    return evaluate_transfer(train, test, sources_a, sources_b, heads, protocol, clear_bench_metrics(),
                             tmp_path, in_task={"signal + abmil": 0.9})


def test_no_patient_of_the_test_task_is_trained_on(cohorts) -> None:
    (_, labels_a, patients_a), (_, labels_b, patients_b) = cohorts
    data = transfer_split(labels_a, patients_a, labels_b, patients_b, "binary", 0.2, seed=0)
    assert data.shared_patients == SHARED
    [fold] = data.splits.folds
    trained = training_scans(data.splits)
    assert all(i.startswith(TRAIN) for i in trained) and all(i.startswith(TEST) for i in fold.test)
    assert len(fold.test) == 100 and len(trained) == 100 - SHARED
    raw_patients = {patients_a[i.removeprefix(TRAIN)] for i in trained}
    assert not raw_patients & set(patients_b.values())
    assert fold.val and len(fold.val) == 18  # ceil(0.2 x 90)


def test_a_shared_signal_carries_over_and_shuffled_labels_land_at_chance(cohorts, tmp_path: Path) -> None:
    a, b = cohorts
    board = _transfer(a, b, tmp_path / "shared")
    rows = {row.aggregator: row for row in board.rows}
    assert rows["linear-probe"].auroc > 0.9 and rows["abmil"].auroc > 0.85
    assert all(row.ci_low <= row.auroc <= row.ci_high for row in board.rows)
    assert (board.train_patients + board.val_patients, board.test_patients) == (100 - SHARED, 100)
    assert rows["abmil"].in_task == 0.9

    rng = np.random.default_rng(0)
    scans = sorted(b[1])
    shuffled = dict(zip(scans, [b[1][scans[j]] for j in rng.permutation(len(scans))], strict=True))
    null = _transfer(a, b, tmp_path / "shuffled", labels_b=shuffled)
    for row in null.rows:
        assert abs(row.auroc - 0.5) < 0.15, row

    markdown = render_transfer_board(board, benchmark="b", version="v")
    assert markdown.startswith("# task-a → task-b")
    assert "| signal | abmil |" in markdown
    assert f"Left out of training: {SHARED} patients of `task-a`" in markdown
    files = transfer_files(board, benchmark="b", version="v", provenance="")
    assert set(files) == {"task-a-to-task-b.transfer.md", "task-a-to-task-b.transfer.csv",
                          "task-a-to-task-b.transfer.json"}
    header = files["task-a-to-task-b.transfer.csv"].decode().splitlines()[0]
    assert header.startswith("rank,train_task,test_task,encoder,aggregator,auroc,auroc_ci_low,auroc_ci_high")


def test_tasks_with_other_labels_are_refused(cohorts, tmp_path: Path) -> None:
    a, b = cohorts
    protocol = EvaluationProtocol(folds=5, seed=0, val_fraction=0.2, bootstrap=10, train=TrainConfig())
    source = FolderBags("signal", "in memory", a[0], "memory-a", EncoderRole("signal"))
    with pytest.raises(UserError, match="the tasks' labels differ"):
        evaluate_transfer(TaskInputs("task-a", "binary", ["finding"], a[1], a[2]),
                          TaskInputs("task-b", "binary", ["other"], b[1], b[2]), [source], [source], [],
                          protocol, clear_bench_metrics(), tmp_path)
