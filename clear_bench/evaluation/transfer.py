"""Train on one task, test on another: every head fitted on all patients of task A, scored on all of task B.

The two tasks must have the same label type and label names (two cohorts of one task, say). The heads
train on A's patients, with a stratified share of them (``val_fraction``) held out for early stopping and
thresholds, and are tested on every patient of B, so the macro AUROC on B (with its patient bootstrap CI)
measures how far what the head learnt on A carries over. A patient of A whose id also appears in B (the same
person in both cohorts) is left out of training, so no patient of B is ever trained on.

The transfer is one :class:`~clear_bench.evaluation.splits.Splits` with a single fold: training and
validation scans from A, test scans from B, their ids prefixed by :data:`TRAIN` and :data:`TEST` so the
two cohorts cannot collide. It trains, stores and is summarised like any cross-validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clear_bench.evaluation.fractions import nested_order, patient_strata
from clear_bench.evaluation.splits import Fold, Splits, assignment_fingerprint
from clear_bench.specs import stable_hash

METHOD = "transfer-v1"
TRAIN, TEST = "train:", "test:"
"""Prefixes of the scan and patient ids of the training task and of the test task."""


@dataclass(frozen=True)
class TransferData:
    """The joint labels and patients of both tasks (prefixed ids), the single-fold split, and how many
    patients of A were left out of training because B has them too."""

    labels: dict[str, np.ndarray]
    splits: Splits
    shared_patients: int


def transfer_split(train_labels: Mapping[str, np.ndarray], train_patients: Mapping[str, str] | None,
                   test_labels: Mapping[str, np.ndarray], test_patients: Mapping[str, str] | None,
                   label_type: str, val_fraction: float, seed: int) -> TransferData:
    """One fold: A's patients (those B does not have) to train and validate on, every scan of B to test."""
    patient_a = {i: str((train_patients or {}).get(i, i)) for i in train_labels}
    patient_b = {i: str((test_patients or {}).get(i, i)) for i in test_labels}
    shared = set(patient_a.values()) & set(patient_b.values())
    usable = sorted(i for i in train_labels if patient_a[i] not in shared)
    patients = sorted({patient_a[i] for i in usable})
    if len(patients) < 2:
        raise ValueError(f"{len(patients)} training patients left ({len(shared)} shared with the test task)")
    strata = patient_strata({i: train_labels[i] for i in usable}, label_type,
                            {i: patient_a[i] for i in usable})
    rng = np.random.default_rng(int(stable_hash([METHOD, seed, patients]), 16) % 2**32)
    order = nested_order(patients, strata, rng)
    n_val = min(len(patients) - 1, max(1, math.ceil(val_fraction * len(patients))))
    val = set(order[:n_val])
    train_ids = [TRAIN + i for i in usable if patient_a[i] not in val]
    val_ids = [TRAIN + i for i in usable if patient_a[i] in val]
    test_ids = [TEST + i for i in sorted(test_labels)]
    patient_of = {**{TRAIN + i: TRAIN + patient_a[i] for i in usable},
                  **{TEST + i: TEST + patient_b[i] for i in test_labels}}
    labels = {**{TRAIN + i: np.asarray(train_labels[i]) for i in usable},
              **{TEST + i: np.asarray(test_labels[i]) for i in test_labels}}
    folds = [Fold(0, sorted(train_ids), sorted(val_ids), test_ids)]
    splits = Splits(assignment_fingerprint(folds, patient_of), 1, seed, float(val_fraction), METHOD, folds,
                    dict(sorted(patient_of.items())), stable_hash([METHOD, seed, sorted(patient_of.items())]))
    return TransferData(labels, splits, len(shared))


def training_scans(splits: Splits) -> list[str]:
    """The scans the heads of a transfer train or early-stop on (A's), with their prefix."""
    return [i for fold in splits.folds for i in fold.train + fold.val]


@dataclass
class TransferRow:
    """One (encoder, head) trained on A and tested on B."""

    encoder: str
    aggregator: str
    auroc: float
    ci_low: float
    ci_high: float
    per_label: dict[str, float] = field(default_factory=dict)
    in_task: float = math.nan
    """The row's K-fold macro AUROC on A's own board, when A was evaluated."""


@dataclass
class TransferBoard:
    """What a ``<train>-to-<test>`` transfer board shows."""

    train: str
    test: str
    label_type: str
    label_names: list[str]
    train_patients: int
    val_patients: int
    test_patients: int
    test_scans: int
    shared_patients: int
    n_boot: int
    rows: list[TransferRow] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.train}-to-{self.test}"

    def to_dict(self) -> dict[str, Any]:
        body = {k: v for k, v in self.__dict__.items() if k != "rows"}
        return {**body, "rows": [dict(row.__dict__) for row in self.rows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferBoard:
        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        rows = [TransferRow(r["encoder"], r["aggregator"], number(r["auroc"]), number(r["ci_low"]),
                            number(r["ci_high"]), {k: number(v) for k, v in r["per_label"].items()},
                            number(r.get("in_task"))) for r in data["rows"]]
        fields = {k: v for k, v in data.items() if k != "rows"}
        return cls(**fields, rows=rows)
