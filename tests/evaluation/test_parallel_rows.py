"""Rows trained in forked worker processes give the boards of a serial run, bit for bit."""

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
from clear_bench.leaderboard import render_task_board
from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs, evaluate_task
from clear_bench.pipeline.features import FolderBags
from clear_bench.pipeline.plan import PlannedHead

SPECS = {spec.name: spec for spec in clear_bench_aggregators()}


def memory(label: str, bags: dict, role: EncoderRole) -> FolderBags:
    """An encoder's bags held in memory (what the cache or a features folder would serve)."""
    return FolderBags(label, "in memory", bags, f"memory-{label}", role)


def board(tmp_path: Path, workers: int, null_heads: tuple[str, ...] | None = None) -> tuple[str, list]:
    signal, labels = planted_bags(30, 12, 6, n_labels=2, n_signal=3, amplitude=3.0, seed=1)
    noise, _ = planted_bags(30, 12, 4, n_labels=2, amplitude=0.0, seed=2)
    encoders = [memory("floor", noise, EncoderRole("floor", reference=True)),
                memory("signal", signal, EncoderRole("signal"))]
    heads = [PlannedHead(ComponentRef(name, name, options), SPECS[name])
             for name, options in (("abmil", {"hidden_dim": 8, "attention_dim": 8}),
                                   ("mean-pool", {"hidden_dim": 8}))]
    protocol = EvaluationProtocol(folds=3, seed=0, val_fraction=0.2, bootstrap=50,
                                  train=TrainConfig(epochs=3, lr=1e-2, batch_size=8, patience=3),
                                  comparison_resamples=500, permutations=2, repeats=2, workers=workers,
                                  permutation_heads=null_heads)
    inputs = TaskInputs("task", "multilabel", ["a", "b"], labels)
    result = evaluate_task(inputs, encoders, heads, protocol, clear_bench_metrics(), tmp_path)
    return render_task_board(result.board, benchmark="t", version="0"), result.cells


def test_rows_in_worker_processes_give_the_serial_board(tmp_path: Path) -> None:
    serial, serial_cells = board(tmp_path / "serial", workers=1)
    parallel, parallel_cells = board(tmp_path / "parallel", workers=2)
    assert len(list((tmp_path / "parallel" / "folds").glob("*.npz"))) == 4 * (2 + 2) * 3
    assert parallel == serial
    assert "| signal | abmil |" in serial and "null" in serial
    for a, b in zip(serial_cells, parallel_cells, strict=True):
        for run_a, run_b in zip(a.results, b.results, strict=True):
            for fold_a, fold_b in zip(run_a.folds, run_b.folds, strict=True):
                np.testing.assert_array_equal(fold_a.test_probs, fold_b.test_probs)


def test_the_permutation_null_can_be_limited_to_some_heads(tmp_path: Path) -> None:
    text, cells = board(tmp_path, workers=1, null_heads=("abmil",))
    assert {cell.row.aggregator: cell.row.null is not None for cell in cells} == {"abmil": True,
                                                                                 "mean-pool": False}
    assert "The permutation null retrains the rows of `abmil` on 2" in text
    assert len(list((tmp_path / "folds").glob("*.npz"))) == 2 * (2 + 2) * 3 + 2 * 2 * 3
    with pytest.raises(UserError, match="permutation_heads: pma is not a head"):
        board(tmp_path, workers=1, null_heads=("pma",))
