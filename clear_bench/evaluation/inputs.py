"""Bags and labels from plain files, for ``clear-bench evaluate`` outside a benchmark run.

- Features in the public CLEAR export layout: a folder of ``{id}.h5`` files with dataset ``feats``
  ``[N, D]`` (or ``[N, 1, D]``), optionally ``slice_index`` and ``window_id`` ``[N]`` (else
  ``0..N-1`` and ``0``), and optionally an ``index.csv`` (``scan_id,file``) for ids that are not plain
  file names (what :func:`clear_bench.cache.export_clear` writes).
- Labels as a CSV ``image,label1,label2,...``: one row per scan. One 0/1 column is a binary task,
  several 0/1 columns a multi-label task, one column of other values a multi-class task (classes in
  sorted order); ``--label-type`` overrides the guess. Rows with an empty label cell are left out.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from clear_bench.errors import DataError
from clear_bench.evaluation.bags import Bag
from clear_bench.naming import safe_filename

_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


@dataclass
class LabelTable:
    """Labels read from a CSV, in the TaskData convention."""

    label_names: list[str]
    label_type: str
    labels: dict[str, np.ndarray]
    patient_of: dict[str, str] | None = None
    skipped: list[str] = field(default_factory=list)


@dataclass
class FeatureFolder:
    """Bags read from a folder, the scans that could not be read, and a content fingerprint."""

    bags: dict[str, Bag]
    failures: dict[str, str]
    fingerprint: str
    provenance: dict[str, object] = field(default_factory=dict)
    """What the files say about the encoder (``clear-bench extract --export-clear`` writes it):
    ``encoder``, ``weights_digest``, ``random_init``, ``reference``; empty for files without it."""


def read_label_csv(path: str | Path, id_column: str = "image", label_type: str = "auto",
                   label_columns: Sequence[str] | None = None,
                   patient_column: str | None = None) -> LabelTable:
    """Read a label CSV; every problem raises :class:`DataError` naming the file, the row and the column."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot read the label CSV ({error})") from error
    if patient_column is None and "patient_id" in header and id_column != "patient_id":
        patient_column = "patient_id"  # the CLEAR seed layout's column: scans of one patient share a fold
    for needed in [id_column, *([patient_column] if patient_column else [])]:
        if needed not in header:
            raise DataError(f"{path}: no column '{needed}' (columns: {', '.join(header)})")
    reserved = (id_column, patient_column)
    columns = list(label_columns) if label_columns else [c for c in header if c not in reserved]
    unknown = [c for c in columns if c not in header]
    if unknown or not columns:
        raise DataError(f"{path}: label column(s) {unknown or '(none)'} not found "
                        f"(columns: {', '.join(header)})")
    table = LabelTable(columns, "", {}, {} if patient_column else None)
    kept: dict[str, dict[str, str]] = {}
    line_of: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        scan_id = (row.get(id_column) or "").strip()
        if not scan_id:
            raise DataError(f"{path}, line {line}: empty '{id_column}'")
        if scan_id in kept:
            raise DataError(f"{path}, line {line}: '{id_column}' {scan_id!r} appears twice")
        values = {c: (row.get(c) or "").strip() for c in columns}
        if any(v == "" for v in values.values()):
            table.skipped.append(scan_id)
            continue
        kept[scan_id] = values
        line_of[scan_id] = line
        if patient_column and table.patient_of is not None:
            table.patient_of[scan_id] = (row.get(patient_column) or "").strip() or scan_id
    binary = all(v.lower() in _TRUE | _FALSE for values in kept.values() for v in values.values())
    if label_type == "auto":
        label_type = ("binary" if len(columns) == 1 else "multilabel") if binary else "multiclass"
    if label_type == "multiclass":
        if len(columns) != 1:
            raise DataError(f"{path}: a multi-class task needs exactly one label column, got {columns}")
        classes = sorted({values[columns[0]] for values in kept.values()}, key=_class_order)
        table.label_names = classes
        table.labels = {i: np.array([classes.index(v[columns[0]])], dtype=np.int64) for i, v in kept.items()}
    else:
        for scan_id, values in kept.items():
            for column, value in values.items():
                if value.lower() not in _TRUE | _FALSE:
                    raise DataError(f"{path}, line {line_of[scan_id]}, column '{column}': {value!r} is not "
                                    f"0/1 (a {label_type} label)")
        table.labels = {i: np.array([float(v.lower() in _TRUE) for v in values.values()], dtype=np.float32)
                        for i, values in kept.items()}
    table.label_type = label_type
    if not table.labels:
        raise DataError(f"{path}: no row has a complete label")
    return table


def read_feature_folder(folder: str | Path, scan_ids: Sequence[str]) -> FeatureFolder:
    """Read the bags of ``scan_ids`` from ``folder``; unreadable or missing files are recorded in
    ``failures`` (scan id -> reason) and the others still load."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of feature files")
    index = _index(folder)
    bags: dict[str, Bag] = {}
    failures: dict[str, str] = {}
    provenance: dict[str, object] = {}
    digest = hashlib.sha256()
    for scan_id in sorted(scan_ids):
        path = _file_of(folder, scan_id, index)
        if path is None:
            failures[scan_id] = f"no feature file for it in {folder}"
            continue
        try:
            raw = path.read_bytes()
            bags[scan_id], attributes = _read_bag(path)
        except (OSError, DataError) as error:
            failures[scan_id] = str(error)
            continue
        provenance = provenance or attributes
        digest.update(scan_id.encode() + b"\0" + hashlib.sha256(raw).digest())
    return FeatureFolder(bags, failures, digest.hexdigest()[:24], provenance)


_PROVENANCE = {"encoder": str, "weights_digest": str, "random_init": bool, "reference": bool}


def _read_bag(path: Path) -> tuple[Bag, dict[str, object]]:
    try:
        with h5py.File(path, "r") as h5:
            attributes = {k: kind(h5.attrs[k]) for k, kind in _PROVENANCE.items() if k in h5.attrs}
            if "feats" not in h5:
                raise DataError(f"{path}: no dataset 'feats' (datasets: {', '.join(h5.keys()) or 'none'})")
            feats = np.asarray(h5["feats"][()], dtype=np.float32)
            slices = np.asarray(h5["slice_index"][()]) if "slice_index" in h5 else None
            windows = np.asarray(h5["window_id"][()]) if "window_id" in h5 else None
    except OSError as error:
        raise DataError(f"{path}: not a readable HDF5 file ({error})") from error
    if feats.ndim == 3 and feats.shape[1] == 1:
        feats = feats[:, 0]
    elif feats.ndim == 1:
        feats = feats[None]
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise DataError(f"{path}: dataset 'feats' has shape {feats.shape}, expected [N, D] with N >= 1")
    if not np.isfinite(feats).all():
        raise DataError(f"{path}: dataset 'feats' holds NaN or infinite values")
    n = feats.shape[0]
    slices = np.arange(n) if slices is None else slices.reshape(-1)
    windows = np.zeros(n, dtype=np.int64) if windows is None else windows.reshape(-1)
    for name, values in (("slice_index", slices), ("window_id", windows)):
        if len(values) != n:
            raise DataError(f"{path}: dataset '{name}' has {len(values)} entries for {n} rows of 'feats'")
    return Bag(feats, slices, windows), attributes


def _index(folder: Path) -> dict[str, str]:
    path = folder / "index.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["scan_id"]: row["file"] for row in csv.DictReader(handle) if row.get("scan_id")}


def _file_of(folder: Path, scan_id: str, index: dict[str, str]) -> Path | None:
    names = [index[scan_id]] if scan_id in index else []
    names += [f"{safe_filename(scan_id)}.h5", f"{scan_id.replace('/', '_')}.h5"]
    root = folder.resolve()
    for name in names:
        candidate = (folder / name).resolve()
        if candidate.parent == root and candidate.is_file():  # never leave the folder
            return candidate
    return None


def _class_order(value: str) -> tuple[int, float, str]:
    """Numeric class names in numeric order, then the others alphabetically."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)
