"""Stage 3, evaluate one task: bags + labels + splits + heads + protocol -> a task result.

``run``, ``evaluate BENCH.yaml``, ``evaluate --features`` and the Python API all end here: the splits
are made (or reused) once per task and shared by every row, every (encoder, head) cell is
cross-validated with content-addressed folds, summarised with the patient bootstrap, optionally checked
with label-shuffle controls, and the rows are compared on shared resamples.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from clear_bench.config import CrossValConfig
from clear_bench.evaluation.bags import Bag, pad_bags
from clear_bench.evaluation.bootstrap import Summary, summarize
from clear_bench.evaluation.compare import compare_rows
from clear_bench.evaluation.crossval import CrossValResult, permute_labels, run_crossval
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.evaluation.splits import ensure_splits
from clear_bench.leaderboard import Row, TaskBoard
from clear_bench.naming import safe_filename
from clear_bench.pipeline.plan import PlannedHead
from clear_bench.specs import MetricSpec

log = logging.getLogger(__name__)


class BagSource(Protocol):
    """One encoder's embeddings for a task: the cache (``run``) or a folder of files (``--features``)."""

    @property
    def label(self) -> str:
        """The row label of the encoder."""
        ...

    @property
    def weights(self) -> str:
        """What the board says about its weights."""
        ...

    def load(self, scan_ids: Sequence[str]) -> tuple[dict[str, Bag], str]:
        """The bags of ``scan_ids`` and a fingerprint of what they were computed from."""
        ...


@dataclass
class TaskInputs:
    """One task as evaluation sees it: the usable scans' labels, patients and what was left out."""

    task_id: str
    label_type: str
    label_names: list[str]
    labels: dict[str, np.ndarray]
    patient_of: dict[str, str] | None = None
    excluded: list[str] = field(default_factory=list)
    """Scans left out of this task, as 'id: reason'."""
    metric: str = "auroc"
    """The primary metric: it ranks the rows and is the one compared."""


@dataclass(frozen=True)
class EvaluationProtocol:
    """How every cell of a task is evaluated (identical for every encoder and head)."""

    folds: int
    seed: int
    val_fraction: float
    bootstrap: int
    shuffle_controls: int
    train: TrainConfig
    threads: int = 1

    @classmethod
    def from_crossval(cls, section: CrossValConfig, device: str = "cpu") -> EvaluationProtocol:
        """The protocol a benchmark YAML's ``crossval`` section declares."""
        return cls(section.folds, section.seed, section.val_fraction, section.bootstrap,
                   section.shuffle_controls, section.train_config(device), section.threads)


@dataclass
class Cell:
    """One (encoder, head) on one task: its board row and its cross-validation result."""

    row: Row
    result: CrossValResult

    @property
    def summary(self) -> Summary:
        return self.row.summary


@dataclass
class TaskResult:
    """What evaluating one task produced: its board and every cell."""

    board: TaskBoard
    cells: list[Cell]
    task_dir: Path


def evaluate_task(inputs: TaskInputs, encoders: Sequence[BagSource], heads: Sequence[PlannedHead],
                  protocol: EvaluationProtocol, metrics: Sequence[MetricSpec], task_dir: Path
                  ) -> TaskResult | None:
    """Cross-validate every head on every encoder's bags of ``inputs``; ``None`` when too few scans."""
    labels = inputs.labels
    patients = set((inputs.patient_of or {}).get(i, i) for i in labels)
    if len(patients) < protocol.folds * 2:
        log.info("task %s: only %d usable scans (%d patients); skipped", inputs.task_id, len(labels),
                 len(patients))
        return None
    splits = ensure_splits(task_dir / "splits", labels, inputs.label_type, k=protocol.folds,
                           seed=protocol.seed, val_fraction=protocol.val_fraction,
                           patient_of=inputs.patient_of)
    ids = splits.scan_ids
    metrics = [m for m in metrics if inputs.label_type in m.label_types]
    cells: list[Cell] = []
    with _cpu_threads(protocol.threads if protocol.train.device == "cpu" else None):
        for source in encoders:
            bags, bagset = source.load(ids)
            padded = pad_bags(bags, ids, cap=protocol.train.eval_max_instances)
            for head in heads:
                log.info("cross-validating %s + %s on %s", source.label, head.ref.id, inputs.task_id)
                cross_validate = partial(
                    run_crossval, padded, label_type=inputs.label_type, label_names=inputs.label_names,
                    splits=splits, aggregator=head.spec, options=head.ref.options, config=protocol.train,
                    bagset_fingerprint=bagset, results_dir=task_dir / "folds")
                result = cross_validate(labels=labels)
                summary = summarize(result, n_boot=protocol.bootstrap, seed=protocol.seed, metrics=metrics)
                shuffled = None
                if protocol.shuffle_controls > 0:
                    shuffled = _shuffle_controls(protocol.shuffle_controls, protocol.seed, labels,
                                                 inputs.patient_of, cross_validate)
                cells.append(Cell(Row(source.label, head.ref.id, summary, source.weights, shuffled), result))
            del padded, bags
    comparisons = compare_rows({cell.row.name: cell.result for cell in cells}, metric=inputs.metric,
                               n_boot=protocol.bootstrap, seed=protocol.seed, metrics=metrics)
    extra = [(m.name, m.title or m.name) for m in metrics if m.name not in _BOARD_COLUMNS]
    board = TaskBoard(inputs.task_id, inputs.label_type, inputs.label_names, len(ids), protocol.folds,
                      [cell.row for cell in cells], comparisons, list(inputs.excluded), metric=inputs.metric,
                      extra_metrics=extra)
    return TaskResult(board, cells, task_dir)


_BOARD_COLUMNS = ("auroc", "auprc", "balanced_accuracy", "f1_macro")
"""Metrics every board shows in its fixed columns; any other registered metric gets a column of its own."""


def task_folder(run_dir: Path, task_id: str) -> Path:
    """Where a task's splits, folds and results live in a run folder."""
    return run_dir / "tasks" / safe_filename(task_id)


def _shuffle_controls(count: int, seed: int, labels: dict[str, np.ndarray], patient_of: dict[str, str] | None,
                      cross_validate: Callable[..., CrossValResult]) -> float:
    """Mean macro AUROC of ``count`` runs on labels shuffled across patients (leakage shows above 0.5)."""
    values = []
    for index in range(count):
        shuffled = permute_labels(labels, patient_of, seed=seed + 1000 + index)
        result = cross_validate(labels=shuffled, control=f"shuffle-{index}")
        values.append(summarize(result, n_boot=1, seed=0).get("auroc").mean)
    return float(np.nanmean(values))


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """Run heads on ``threads`` CPU threads, restoring torch's setting afterwards."""
    import torch

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
