"""Evaluate one transfer pair: every (encoder, head) trained on all of task A, tested on all of task B.

See :mod:`clear_bench.evaluation.transfer` for the split. The heads, their options, the training settings
and the tuning (when a head is tuned) are the benchmark's, as on the task boards; folds are
content-addressed under ``<run>/transfer/<A>-to-<B>/folds``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clear_bench.errors import UserError
from clear_bench.evaluation.bags import pad_bags
from clear_bench.evaluation.crossval import CrossValRun, labels_digest, run_crossvals
from clear_bench.evaluation.transfer import (
    TEST,
    TRAIN,
    TransferBoard,
    TransferRow,
    training_scans,
    transfer_split,
)
from clear_bench.naming import safe_filename
from clear_bench.pipeline.evaluate import BagSource, EvaluationProtocol, TaskInputs, tuned_heads
from clear_bench.pipeline.plan import PlannedHead
from clear_bench.pipeline.statistics import StatsCache
from clear_bench.specs import MetricSpec, stable_hash

log = logging.getLogger(__name__)


def evaluate_transfer(train: TaskInputs, test: TaskInputs, train_sources: Sequence[BagSource],
                      test_sources: Sequence[BagSource], heads: Sequence[PlannedHead],
                      protocol: EvaluationProtocol, metrics: Sequence[MetricSpec], folder: Path,
                      in_task: Mapping[str, float] | None = None) -> TransferBoard:
    """Train every head of every encoder (``train_sources[i]`` and ``test_sources[i]`` are one encoder's
    bags of the two tasks) on ``train``'s patients and score it on ``test``'s; ``in_task``: each row's
    K-fold macro AUROC on ``train``'s own board, by row name, shown beside."""
    where = f"transfer {train.task_id} -> {test.task_id}"
    if (train.label_type, list(train.label_names)) != (test.label_type, list(test.label_names)):
        raise UserError(f"{where}: the tasks' labels differ ({train.label_type} {train.label_names} vs "
                        f"{test.label_type} {test.label_names}); transfer needs the same label names")
    try:
        data = transfer_split(train.labels, train.patient_of, test.labels, test.patient_of, train.label_type,
                              protocol.val_fraction, protocol.seed)
    except ValueError as error:
        raise UserError(f"{where}: {error}") from None
    if data.shared_patients:
        log.warning("%s: %d patients of %s are also in %s and are left out of training", where,
                    data.shared_patients, train.task_id, test.task_id)
    metrics = [m for m in metrics if train.label_type in m.label_types]
    splits, ids = data.splits, sorted(data.labels)
    # A fold's key holds the labels of its test scans (every scan of a K-fold split is tested once); the
    # training task's labels enter it here, with the bags.
    train_labels = labels_digest(data.labels, training_scans(splits))
    fold = splits.folds[0]
    run = CrossValRun(data.labels, splits, "transfer")
    tuned = tuned_heads(protocol.tuning, heads)
    stats = StatsCache(folder / "stats")
    rows = []
    train_ids = [i.removeprefix(TRAIN) for i in training_scans(splits)]
    test_ids = [i.removeprefix(TEST) for i in fold.test]
    for train_source, test_source in zip(train_sources, test_sources, strict=True):
        bags_a, fingerprint_a = train_source.load(train_ids)
        bags_b, fingerprint_b = test_source.load(test_ids)
        bags = {**{TRAIN + i: bag for i, bag in bags_a.items()},
                **{TEST + i: bag for i, bag in bags_b.items()}}
        padded = pad_bags(bags, ids, cap=protocol.train.eval_max_instances)
        bagset = stable_hash(["transfer", fingerprint_a, fingerprint_b, train_labels])
        for head in heads:
            log.info("%s: %s + %s", where, train_source.label, head.ref.id)
            [result] = run_crossvals(padded, [run], train.label_type, train.label_names, head.spec,
                                     head.ref.options, protocol.train, bagset_fingerprint=bagset,
                                     results_dir=folder / "folds",
                                     tuning=protocol.tuning if head.ref.id in tuned else None)
            # the result holds its tested scans' labels; the thresholds also read the validation scans' (A's)
            result.labels = {i: np.asarray(v) for i, v in data.labels.items()}
            result.patient_of = dict(splits.patient_of)
            summary = stats.summary([result], n_boot=protocol.bootstrap, seed=protocol.seed, metrics=metrics)
            value = summary.get(test.metric)
            per_label = {}
            for label in train.label_names:
                try:
                    per_label[label] = summary.get(test.metric, label).mean
                except KeyError:
                    per_label[label] = math.nan
            name = f"{train_source.label} + {head.ref.id}"
            rows.append(TransferRow(train_source.label, head.ref.id, value.mean, value.ci_low, value.ci_high,
                                    per_label, (in_task or {}).get(name, math.nan)))
        del padded, bags
    patients = {part: len({splits.patient_of[i] for i in getattr(fold, part)})
                for part in ("train", "val", "test")}
    return TransferBoard(train.task_id, test.task_id, train.label_type, list(train.label_names),
                         patients["train"], patients["val"], patients["test"], len(fold.test),
                         data.shared_patients, protocol.bootstrap, rows)


def transfer_folder(run_dir: Path, name: str) -> Path:
    """Where a transfer pair's folds, statistics and result live in a run folder."""
    return run_dir / "transfer" / safe_filename(name)
