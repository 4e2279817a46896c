"""Patient labels from a clinical CSV (``image,label1,label2,...``), joined to a source's scan ids.

The CSV is read with pandas, every cell as text, so that a stage ``IIIa``, an id ``007`` or a ``1.0`` flag
reach the parsers below as written; pandas' missing-value markers (``NA``, ``N/A``, ``NaN``, empty) are
missing values.

Every problem is a :class:`DataError` naming the CSV file, and the column or row. An id in the CSV that the
source does not serve is an error by default (``missing: skip`` to ignore such rows); a scan without a
row, or with an empty cell, is simply left unlabelled.

Patients: :func:`csv_patients` reads a patient column (its values used as given: the user's own
pseudonyms); :func:`ct_rate_patient` reads the patient from a CT-RATE volume name
(``train_123_a_1``: patient ``train_123``, scan ``a``, reconstruction ``1``).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from clear_bench.data.files import safe_id, scan_stem
from clear_bench.errors import DataError

log = logging.getLogger(__name__)

_TRUE = {"1", "1.0", "true", "yes", "y", "positive", "pos", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "negative", "neg", "f"}
_ROMAN = {"I": 0, "II": 1, "III": 2, "IV": 3}
CT_RATE_NAME = re.compile(r"^(?P<patient>(?:train|valid|test)_\d+)_(?P<scan>[A-Za-z]+)_(?P<recon>\d+)$")
"""A CT-RATE ``VolumeName`` without its extension: ``<split>_<patient>_<scan>_<reconstruction>``."""


class Row(dict):
    """One CSV row, cells as stripped text (a missing value is ``""``), with its ``line`` in the file."""

    line: int = 0


def read_csv(path: str | Path) -> tuple[list[str], list[Row]]:
    """Header and rows of a CSV (comma, semicolon or tab separated; UTF-8 with or without BOM), read with
    pandas as text: every cell the stripped string written there (an id ``NA`` stays ``NA``; label cells
    are tested with :func:`is_missing`), blank lines dropped, each row knowing its line number."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label CSV not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read label CSV ({exc})") from exc
    if not text.strip():
        raise DataError(f"{path}: label CSV is empty")
    try:  # the delimiter from the header line only: column names such as clinical.T.Stage hold dots
        delimiter = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False,
                            skip_blank_lines=False, skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse label CSV ({_first_line(exc)})") from exc
    header = [str(c).strip() for c in frame.columns]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    mangled = [c for c in header if re.fullmatch(r".+\.\d+", c) and c.rsplit(".", 1)[0] in header]
    if duplicated or mangled:
        names = duplicated or [c.rsplit(".", 1)[0] for c in mangled]
        raise DataError(f"{path}: line 1: column(s) {', '.join(names)} appear more than once")
    rows: list[Row] = []
    for index, values in enumerate(frame.itertuples(index=False, name=None)):
        row = Row((name, "" if pd.isna(value) else str(value).strip())
                  for name, value in zip(header, values, strict=True))
        if not any(row.values()):
            continue  # a blank line
        row.line = index + 2
        rows.append(row)
    return header, rows


MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a", "<na>", "?"})
"""Label cells that mean 'not known' (case-insensitive): the scan is left unlabelled for that task."""


def is_missing(cell: str) -> bool:
    """Whether a label cell is a missing value (empty, ``NA``, ``N/A``, ``NaN``, ``null``...)."""
    return cell.strip().lower() in MISSING


def normalise_id(value: str) -> str:
    """The scan id a CSV cell refers to: file extensions dropped, unsafe characters replaced."""
    return safe_id(scan_stem(Path(value.strip())))


def require_columns(path: Path, header: Sequence[str], columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(header)})")


def binary_labels(path: str | Path, id_column: str, columns: Sequence[str], known_ids: Iterable[str],
                  missing: str = "error") -> dict[str, np.ndarray]:
    """0/1 vectors over ``columns`` per scan id; rows with an empty cell are left out."""
    path = Path(path)
    header, rows = read_csv(path)
    require_columns(path, header, [id_column, *columns])
    joined = _join(path, rows, id_column, known_ids, missing)
    labels: dict[str, np.ndarray] = {}
    unlabelled = []
    for line, scan_id, row in joined:
        empty = [c for c in columns if is_missing(row[c])]
        if empty:
            unlabelled.append(f"line {line} ('{scan_id}'): {', '.join(empty)}")
            continue
        labels[scan_id] = np.array([_binary(path, line, c, row[c]) for c in columns], dtype=np.float32)
    _warn_unlabelled(path, unlabelled)
    return labels


def _warn_unlabelled(path: Path, unlabelled: list[str]) -> None:
    """Say which rows an empty label cell leaves out (they are not an error: clinical data has gaps)."""
    if unlabelled:
        more = len(unlabelled) - 5
        shown = "; ".join(unlabelled[:5]) + (f"; and {more} more" if more > 0 else "")
        log.warning("%s: %d row(s) left out for an empty label cell: %s", path, len(unlabelled), shown)


def class_labels(path: str | Path, id_column: str, column: str, known_ids: Iterable[str],
                 classes: Sequence[str] | None = None, missing: str = "error",
                 parse: str = "text") -> tuple[list[str], dict[str, np.ndarray]]:
    """One class index per scan id from ``column``; ``parse='stage'`` reads I-IV, 1-4, 'Stage IIIA'."""
    path = Path(path)
    header, rows = read_csv(path)
    require_columns(path, header, [id_column, column])
    joined = _join(path, rows, id_column, known_ids, missing)
    values: dict[str, str] = {}
    unlabelled = []
    for line, scan_id, row in joined:
        cell = row[column]
        if is_missing(cell):
            unlabelled.append(f"line {line} ('{scan_id}'): {column}")
            continue
        values[scan_id] = _stage(path, line, column, cell) if parse == "stage" else cell
    _warn_unlabelled(path, unlabelled)
    if parse == "stage":
        names = list(classes or ("I", "II", "III", "IV"))
    else:
        names = list(classes) if classes else sorted(set(values.values()))
    index = {name: i for i, name in enumerate(names)}
    labels: dict[str, np.ndarray] = {}
    for scan_id, value in values.items():
        if value not in index:
            raise DataError(f"{path}: column '{column}' has value '{value}' for '{scan_id}', "
                            f"not one of the classes {', '.join(names)}")
        labels[scan_id] = np.array([index[value]], dtype=np.int64)
    if len(set(values.values())) < 2 and values:
        raise DataError(f"{path}: column '{column}' holds a single class; nothing to predict")
    return names, labels


def csv_patients(path: str | Path, id_column: str, column: str, scan_ids: Iterable[str],
                 reveals: Callable[[str, str], bool] | None = None) -> dict[str, str]:
    """The patient of each of ``scan_ids`` from the CSV's ``column``, used as given; a scan whose cell is
    empty (or that has no row) is left out. ``reveals(scan_id, value)`` flags a value that is a raw
    identifier of the scan (its DICOM PatientID): that is an error naming the line, never the value."""
    path = Path(path)
    header, rows = read_csv(path)
    require_columns(path, header, [id_column, column])
    out: dict[str, str] = {}
    for line, scan_id, row in _join(path, rows, id_column, scan_ids, "skip"):
        value = row.get(column, "")
        if is_missing(value):
            continue
        if reveals is not None and reveals(scan_id, value):
            raise DataError(f"{path}: line {line}: column '{column}' holds the DICOM PatientID of scan "
                            f"'{scan_id}'; give a pseudonym instead (patient ids are written to the split "
                            "files)")
        out[scan_id] = value
    return out


def ct_rate_patient(scan_id: str) -> str | None:
    """The patient of a CT-RATE volume name (``train_123_a_1`` -> ``train_123``), else ``None``."""
    match = CT_RATE_NAME.match(scan_id)
    return match.group("patient") if match else None


def _join(path: Path, rows: list[Row], id_column: str, known_ids: Iterable[str],
          missing: str) -> list[tuple[int, str, dict[str, str]]]:
    known = set(known_ids)
    out, unknown, seen = [], [], {}
    for row in rows:
        line = getattr(row, "line", 0)
        raw = row.get(id_column, "")
        if raw == "":
            raise DataError(f"{path}: line {line}: empty '{id_column}'")
        scan_id = normalise_id(raw)
        if scan_id in seen:
            raise DataError(f"{path}: line {line}: '{raw}' also on line {seen[scan_id]} ({id_column})")
        seen[scan_id] = line
        if scan_id not in known:
            unknown.append(raw)
            continue
        out.append((line, scan_id, row))
    if unknown and missing == "error":
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DataError(f"{path}: {len(unknown)} patient(s) in column '{id_column}' have no scan in the "
                        f"source: {shown} (set missing: skip to ignore them)")
    return out


def _binary(path: Path, line: int, column: str, cell: str) -> float:
    key = cell.lower()
    if key in _TRUE:
        return 1.0
    if key in _FALSE:
        return 0.0
    raise DataError(f"{path}: line {line}: column '{column}' has '{cell}', "
                    "expected 0/1 (or yes/no, true/false)")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:240]


def _stage(path: Path, line: int, column: str, cell: str) -> str:
    text = cell.strip().upper().removeprefix("STAGE").strip()
    if text[:1].isdigit() and text[0] in "1234":
        return ("I", "II", "III", "IV")[int(text[0]) - 1]
    match = re.match(r"^(IV|I{1,3})(?![IV])", text)
    if match:
        return match.group(1)
    raise DataError(f"{path}: line {line}: column '{column}' has '{cell}', expected a stage I-IV (or 1-4)")
