"""Patient-level, stratified K-fold splits, saved once per task and shared by every encoder and aggregator.

Usage::

    splits = ensure_splits(folder, labels, "multilabel", k=5, seed=0, val_fraction=0.2, patient_of=None)
    for fold in splits.folds:  # fold.train / fold.val / fold.test are lists of scan ids
        ...

The ids of ``labels`` are scan ids; ``patient_of`` (scan id -> patient id) keeps all scans of one patient
in one fold (default: every scan is its own patient). Patients are stratified on their labels with
iterative stratification (Sechidis et al., 2011), which balances every label of a multi-label task at
once; binary and multi-class labels are stratified on their one-hot classes. Each fold's training
patients are split again, the same way, into ``train`` and an inner ``val`` set for early stopping.

The result is written as ``splits-<fingerprint>.json`` (atomic write). The fingerprint hashes the
patients, their scans, the labels, K, the seed, the validation fraction and :data:`METHOD_VERSION`, so
it is known before the split is computed: every encoder of a task finds and reuses the same file.
:func:`require_same_splits` is the check a leaderboard runs before putting rows side by side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clear_bench.atomic import atomic_write_text
from clear_bench.errors import DataError, UserError
from clear_bench.specs import LabelType, stable_hash

METHOD_VERSION = "iterative-stratification-v1"


@dataclass(frozen=True)
class Fold:
    """One fold: scan ids to train on, to early-stop on, and to test on (sorted)."""

    index: int
    train: list[str]
    val: list[str]
    test: list[str]


@dataclass(frozen=True)
class Splits:
    """All folds of a task plus what determined them.

    ``fingerprint`` hashes the fold assignment itself (every fold's train, validation and test scans and
    the patient grouping): it is what boards, fold results and comparisons trust. ``request`` hashes the
    inputs that produced it (labels, k, seed...) and names the file, so the same request finds it again.
    """

    fingerprint: str
    k: int
    seed: int
    val_fraction: float
    method: str
    folds: list[Fold]
    patient_of: dict[str, str]
    request: str = ""

    @property
    def scan_ids(self) -> list[str]:
        return sorted(scan_id for fold in self.folds for scan_id in fold.test)

    def to_json(self) -> dict:
        return {
            "fingerprint": self.fingerprint, "k": self.k, "seed": self.seed,
            "val_fraction": self.val_fraction, "method": self.method, "patient_of": self.patient_of,
            "request": self.request,
            "folds": [{"index": f.index, "train": f.train, "val": f.val, "test": f.test} for f in self.folds],
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Splits:
        folds = [Fold(int(f["index"]), list(f["train"]), list(f["val"]), list(f["test"]))
                 for f in data["folds"]]
        return cls(str(data["fingerprint"]), int(data["k"]), int(data["seed"]), float(data["val_fraction"]),
                   str(data["method"]), folds, dict(data["patient_of"]), str(data.get("request", "")))


class SplitMismatchError(UserError):
    """Results computed on different splits were about to be compared."""


def assignment_fingerprint(folds: Sequence[Fold], patient_of: Mapping[str, str]) -> str:
    """A hash of the fold assignment: every fold's train, validation and test scans, and the patients."""
    return stable_hash({"folds": [[f.index, f.train, f.val, f.test] for f in folds],
                        "patient_of": dict(sorted(patient_of.items())), "method": METHOD_VERSION})


def split_fingerprint(labels: Mapping[str, np.ndarray], label_type: LabelType, k: int = 5, seed: int = 0,
                      val_fraction: float = 0.2, patient_of: Mapping[str, str] | None = None) -> str:
    """The request key of these inputs, which names the splits file (cheap: nothing is split)."""
    patient_of = _patients(labels, patient_of)
    return stable_hash({
        "label_type": str(label_type),
        "labels": {scan_id: np.asarray(v).astype(float).tolist() for scan_id, v in sorted(labels.items())},
        "patient_of": dict(sorted(patient_of.items())), "k": int(k), "seed": int(seed),
        "val_fraction": round(float(val_fraction), 6), "method": METHOD_VERSION,
    })


def make_splits(labels: Mapping[str, np.ndarray], label_type: LabelType, k: int = 5, seed: int = 0,
                val_fraction: float = 0.2, patient_of: Mapping[str, str] | None = None) -> Splits:
    """Stratified patient-level K-fold with an inner validation split of each fold's training patients."""
    if k < 2:
        raise UserError(f"cross-validation needs at least 2 folds, got k={k}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    patient_of = _patients(labels, patient_of)
    patients = sorted(set(patient_of.values()))
    if len(patients) < k:
        raise DataError(f"{len(patients)} patients cannot fill {k} folds")
    targets = _patient_targets(labels, label_type, patient_of, patients)
    rng = np.random.default_rng(seed)
    fold_of = iterative_stratification(targets, [1.0 / k] * k, rng)
    scans_of: dict[str, list[str]] = {}
    for scan_id, patient in patient_of.items():
        scans_of.setdefault(patient, []).append(scan_id)

    def scans(patient_rows: np.ndarray) -> list[str]:
        return sorted(s for p in patient_rows for s in scans_of[patients[p]])

    folds = []
    for fold in range(k):
        test_rows = np.flatnonzero(fold_of == fold)
        rest = np.flatnonzero(fold_of != fold)
        inner = iterative_stratification(targets[rest], [1.0 - val_fraction, val_fraction], rng)
        if not (inner == 1).any():  # tiny cohorts: still hold out one patient for early stopping
            inner[rng.integers(len(rest))] = 1
        folds.append(Fold(fold, scans(rest[inner == 0]), scans(rest[inner == 1]), scans(test_rows)))
    request = split_fingerprint(labels, label_type, k, seed, val_fraction, patient_of)
    return Splits(assignment_fingerprint(folds, patient_of), k, seed, float(val_fraction), METHOD_VERSION,
                  folds, dict(sorted(patient_of.items())), request)


def iterative_stratification(targets: np.ndarray, ratios: Sequence[float],
                             rng: np.random.Generator) -> np.ndarray:
    """Assign each row of the 0/1 matrix ``targets [n, L]`` to a subset with the given size ``ratios``.

    Iterative stratification: the rarest remaining label is distributed first, each of its rows going to
    the subset that most lacks that label (ties: the subset that most lacks rows, then at random). Rows
    with no positive label fill the subsets that most lack rows. Returns the subset index of every row.
    """
    targets = np.asarray(targets, dtype=bool)
    n = targets.shape[0]
    ratios_arr = np.asarray(ratios, dtype=float) / np.sum(ratios)
    want_rows = ratios_arr * n
    want_label = np.outer(ratios_arr, targets.sum(axis=0)).astype(float)  # [subsets, labels]
    subset = np.full(n, -1, dtype=np.int64)
    remaining = targets.copy()
    order = rng.permutation(n)  # random tie-breaking among rows, fixed by the seed
    while True:
        counts = remaining.sum(axis=0)
        live = np.flatnonzero(counts > 0)
        if len(live) == 0:
            break
        rarest = live[counts[live] == counts[live].min()]
        label = int(rng.choice(rarest))
        for row in order[remaining[order, label]]:
            best = np.flatnonzero(want_label[:, label] == want_label[:, label].max())
            if len(best) > 1:
                best = best[want_rows[best] == want_rows[best].max()]
            chosen = int(rng.choice(best))
            subset[row] = chosen
            want_rows[chosen] -= 1
            want_label[chosen] -= targets[row]
            remaining[row] = False
    for row in order[subset[order] < 0]:
        best = np.flatnonzero(want_rows == want_rows.max())
        chosen = int(rng.choice(best))
        subset[row] = chosen
        want_rows[chosen] -= 1
    return subset


def ensure_splits(folder: str | Path, labels: Mapping[str, np.ndarray], label_type: LabelType,
                  k: int = 5, seed: int = 0, val_fraction: float = 0.2,
                  patient_of: Mapping[str, str] | None = None) -> Splits:
    """Load ``folder/splits-<request key>.json`` when it exists, else compute, save and return it."""
    request = split_fingerprint(labels, label_type, k, seed, val_fraction, patient_of)
    path = Path(folder) / f"splits-{request}.json"
    if path.exists():
        splits = load_splits(path)
        if splits.request != request:
            raise DataError(f"{path}: field 'request' is {splits.request!r}, expected {request}")
        return splits
    splits = make_splits(labels, label_type, k, seed, val_fraction, patient_of)
    save_splits(splits, path)
    return splits


def save_splits(splits: Splits, path: str | Path) -> Path:
    """Write the splits as JSON atomically (temp file + rename)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(splits.to_json(), indent=1, sort_keys=True))
    return path


def load_splits(path: str | Path) -> Splits:
    """Read splits written by :func:`save_splits`; a damaged file raises :class:`DataError` naming it."""
    path = Path(path)
    try:
        splits = Splits.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: cannot read splits ({error})") from error
    actual = assignment_fingerprint(splits.folds, splits.patient_of)
    if splits.fingerprint != actual:
        raise DataError(f"{path}: field 'fingerprint' is {splits.fingerprint} but the folds it holds hash to "
                        f"{actual} (edited or damaged); delete it to split again")
    return splits


def require_same_splits(fingerprints: Mapping[str, str]) -> str:
    """Return the one split fingerprint shared by all rows (row name -> fingerprint), or raise
    :class:`SplitMismatchError` listing which rows were evaluated on which splits."""
    distinct = sorted(set(fingerprints.values()))
    if len(distinct) > 1:
        lines = ["rows were evaluated on different splits and cannot be compared:"]
        for fp in distinct:
            lines.append(f"  {fp}: {', '.join(sorted(r for r, f in fingerprints.items() if f == fp))}")
        raise SplitMismatchError(lines[0], lines=lines)
    if not distinct:
        raise SplitMismatchError("no rows to compare")
    return distinct[0]


def _patients(labels: Mapping[str, np.ndarray], patient_of: Mapping[str, str] | None) -> dict[str, str]:
    if patient_of is None:
        return {scan_id: scan_id for scan_id in labels}
    missing = [scan_id for scan_id in labels if scan_id not in patient_of]
    if missing:
        raise DataError(f"patient mapping lacks {len(missing)} scans, e.g. {missing[:3]}")
    return {scan_id: str(patient_of[scan_id]) for scan_id in labels}


def _patient_targets(labels: Mapping[str, np.ndarray], label_type: LabelType, patient_of: Mapping[str, str],
                     patients: list[str]) -> np.ndarray:
    """One 0/1 stratification row per patient: the union of its scans' labels (one-hot classes for
    binary and multi-class tasks, so that negatives are balanced too)."""
    row_of = {p: i for i, p in enumerate(patients)}
    values = {scan_id: np.asarray(v).reshape(-1) for scan_id, v in labels.items()}
    if label_type == "multiclass":
        n_classes = int(max(int(v[0]) for v in values.values())) + 1
        width = n_classes
    elif label_type == "binary":
        width = 2 * len(next(iter(values.values())))
    else:
        width = len(next(iter(values.values())))
    targets = np.zeros((len(patients), width), dtype=bool)
    for scan_id, v in values.items():
        row = row_of[patient_of[scan_id]]
        if label_type == "multiclass":
            targets[row, int(v[0])] = True
        elif label_type == "binary":
            positive = v.astype(bool)
            targets[row] |= np.concatenate([~positive, positive])
        else:
            targets[row] |= v.astype(bool)
    return targets
