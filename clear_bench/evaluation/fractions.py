"""Label efficiency: the same folds with fewer labelled training patients.

A fraction ``f`` of a fold keeps ``ceil(f x n)`` of its training patients (at least 2) and as many of its
validation patients (at least 1); its test patients are untouched, so every point of a curve is scored on
the same test scans as the full-data row. Draws are nested and stratified: for each (fold, draw) the
training patients are put in one random order in which every prefix holds each stratum in proportion
(stratum: the class, or for multi-label tasks the patient's rarest positive label), and a fraction takes
a prefix of that order, so a smaller draw is a subset of the larger one of the same draw index. The
result is an ordinary :class:`~clear_bench.evaluation.splits.Splits` (its own fingerprint), so the
folds train, store and summarise like any other run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from clear_bench.evaluation.splits import Fold, Splits, assignment_fingerprint
from clear_bench.specs import stable_hash


def fraction_splits(splits: Splits, labels: Mapping[str, np.ndarray], label_type: str, fraction: float,
                    draw: int) -> Splits:
    """``splits`` with each fold's training and validation patients cut to ``fraction`` (draw ``draw``);
    ``fraction >= 1`` returns ``splits`` itself."""
    if fraction >= 1.0:
        return splits
    if fraction <= 0.0:
        raise ValueError(f"a training fraction must lie in (0, 1], got {fraction}")
    patient_of = {i: splits.patient_of.get(i, i) for i in splits.scan_ids}
    strata = patient_strata(labels, label_type, patient_of)
    folds = []
    for fold in splits.folds:
        kept = {}
        for part, minimum in (("train", 2), ("val", 1)):
            scans = getattr(fold, part)
            patients = sorted({patient_of[i] for i in scans})
            seed = int(stable_hash(["train-fraction", splits.fingerprint, fold.index, draw, part]), 16)
            order = nested_order(patients, strata, np.random.default_rng(seed % (2**32)))
            count = min(len(patients), max(minimum, math.ceil(fraction * len(patients))))
            chosen = set(order[:count])
            kept[part] = sorted(i for i in scans if patient_of[i] in chosen)
        folds.append(Fold(fold.index, kept["train"], kept["val"], list(fold.test)))
    return Splits(assignment_fingerprint(folds, splits.patient_of), splits.k, splits.seed,
                  splits.val_fraction, splits.method, folds, splits.patient_of,
                  stable_hash([splits.request, "train-fraction", round(float(fraction), 6), draw]))


def nested_order(patients: Sequence[str], strata: Mapping[str, str], rng: np.random.Generator) -> list[str]:
    """``patients`` in a random order whose every prefix holds each stratum in proportion to its size: the
    members of a stratum of size ``n`` sit at evenly spaced keys ``(rank + u) / n`` (``u`` one uniform
    offset per stratum), and the order sorts by key."""
    groups: dict[str, list[str]] = {}
    for patient in patients:
        groups.setdefault(strata.get(patient, ""), []).append(patient)
    keys: dict[str, float] = {}
    for stratum in sorted(groups):
        members = list(groups[stratum])
        rng.shuffle(members)
        offset = float(rng.random())
        for rank, patient in enumerate(members):
            keys[patient] = (rank + offset) / len(members)
    return sorted(patients, key=lambda p: (keys[p], p))


def patient_strata(labels: Mapping[str, np.ndarray], label_type: str,
            patient_of: Mapping[str, str]) -> dict[str, str]:
    """Each patient's stratum: its class (multi-class), its label (binary), or its rarest positive label
    (multi-label; ``"none"`` without one), from the union of its scans' labels."""
    rows: dict[str, np.ndarray] = {}
    for scan_id, patient in patient_of.items():
        row = np.asarray(labels[scan_id]).reshape(-1).astype(float)
        rows[patient] = np.maximum(rows[patient], row) if patient in rows else row
    if label_type == "multiclass" or next(iter(rows.values())).size == 1:
        return {p: str(int(row[0])) for p, row in rows.items()}
    prevalence = np.sum(np.stack(list(rows.values())), axis=0)
    strata = {}
    for patient, row in rows.items():
        positive = np.flatnonzero(row > 0)
        strata[patient] = str(int(positive[np.argmin(prevalence[positive])])) if len(positive) else "none"
    return strata


def training_patients(splits: Splits) -> float:
    """The mean number of labelled patients a fold trains on (training and validation)."""
    patient_of = splits.patient_of
    counts = [len({patient_of.get(i, i) for i in fold.train + fold.val}) for fold in splits.folds]
    return float(np.mean(counts))


def efficiency_area(fractions: Sequence[float], values: Sequence[float]) -> float:
    """The area under macro AUROC against the training fraction on a log scale, divided by its width:
    the mean AUROC over the curve with small fractions weighed as much as large ones (NaN with fewer than
    two finite points)."""
    points = sorted((f, v) for f, v in zip(fractions, values, strict=True) if math.isfinite(v))
    if len(points) < 2 or points[0][0] == points[-1][0]:
        return math.nan
    x = np.log([f for f, _ in points])
    y = np.asarray([v for _, v in points])
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))
