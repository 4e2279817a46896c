"""Lesion annotations as per-slice boxes: DeepLesion ``DL_info.csv``, segmentation masks, seed lesion CSV.

Boxes are :class:`~clear_bench.specs.LesionBox` in pixel coordinates of their slice (x right, y down;
``x1``/``y1`` are the far pixel edges). Every parsing problem is a :class:`DataError` naming the file,
line and column.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clear_bench.errors import DataError
from clear_bench.specs import LesionBox

LESION_TYPES: tuple[str, ...] = (
    "bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft tissue", "pelvis",
)
"""DeepLesion's eight coarse lesion types, in the order of their codes 1..8 in ``Coarse_lesion_type``."""

DL_INFO_COLUMNS = ("File_name", "Key_slice_index", "Bounding_boxes", "Coarse_lesion_type", "Spacing_mm_px_",
                   "Slice_range")
_NUMBERS = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class DeepLesionRecord:
    """One row of ``DL_info.csv`` (identifying columns such as age and sex are not kept)."""

    series: str  # "<patient>_<study>_<series>", the folder of Images_png
    key_slice: int  # the number of the key slice's PNG file
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    lesion_type: str | None  # one of LESION_TYPES, None when unknown (-1: the training split)
    spacing: tuple[float, float, float]  # dz, dy, dx in mm
    slice_range: tuple[int, int]
    noisy: bool
    split: int  # 1 train, 2 validation, 3 test (0 when absent)

    @property
    def patient(self) -> str:
        """DeepLesion's patient index (``Patient_index``): the first part of the series name, as written
        there (``"000001"``). Already a pseudonym of the dataset; sources hash it like any patient field."""
        return self.series.split("_", 1)[0]


def read_deeplesion_info(path: str | Path) -> dict[str, list[DeepLesionRecord]]:
    """Rows of a DeepLesion ``DL_info.csv`` grouped by series folder name."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: DL_info.csv not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in DL_INFO_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: missing DeepLesion column(s) {', '.join(missing)}")
        out: dict[str, list[DeepLesionRecord]] = {}
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            record = _deeplesion_row(path, line, row)
            out.setdefault(record.series, []).append(record)
    return out


def _deeplesion_row(path: Path, line: int, row: dict[str, str]) -> DeepLesionRecord:
    name = row["File_name"]
    match = re.match(r"^(\d+_\d+_\d+)_(\d+)\.png$", name)
    if not match:
        raise DataError(f"{path}: line {line}: File_name '{name}' is not "
                        "<patient>_<study>_<series>_<slice>.png")
    box = _floats(path, line, "Bounding_boxes", row["Bounding_boxes"], 4)
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        raise DataError(f"{path}: line {line}: Bounding_boxes {row['Bounding_boxes']} has x1 < x0 or y1 < y0")
    key = int(_floats(path, line, "Key_slice_index", row["Key_slice_index"], 1)[0])
    code = int(_floats(path, line, "Coarse_lesion_type", row["Coarse_lesion_type"], 1)[0])
    if code != -1 and not 1 <= code <= len(LESION_TYPES):
        raise DataError(f"{path}: line {line}: Coarse_lesion_type {code} is not 1..8 or -1")
    sx, sy, sz = _floats(path, line, "Spacing_mm_px_", row["Spacing_mm_px_"], 3)
    lo, hi = (int(v) for v in _floats(path, line, "Slice_range", row["Slice_range"], 2))
    noisy = row.get("Possibly_noisy", "0") in ("1", "1.0")
    split_text = row.get("Train_Val_Test", "")
    return DeepLesionRecord(
        series=match.group(1), key_slice=key, box=(x0, y0, x1, y1),
        lesion_type=LESION_TYPES[code - 1] if code > 0 else None, spacing=(sz, sy, sx),
        slice_range=(lo, hi), noisy=noisy, split=int(split_text) if split_text.isdigit() else 0,
    )


def _floats(path: Path, line: int, column: str, text: str, count: int) -> list[float]:
    values = [float(v) for v in _NUMBERS.findall(text)]
    if len(values) != count:
        raise DataError(f"{path}: line {line}: column '{column}' has '{text}', expected {count} number(s)")
    return values


def deeplesion_boxes(records: Iterable[DeepLesionRecord], slice_numbers: Sequence[int]) -> list[LesionBox]:
    """Boxes of ``records`` on a volume whose slices carry the PNG numbers ``slice_numbers`` (in order);
    a key slice that is not among them is skipped."""
    position = {number: index for index, number in enumerate(slice_numbers)}
    boxes = []
    for record in records:
        if record.key_slice in position:
            boxes.append(LesionBox(position[record.key_slice], *record.box, label=record.lesion_type))
    return boxes


def boxes_from_mask(mask: np.ndarray, label: str | None = None, min_pixels: int = 1) -> list[LesionBox]:
    """One box per 8-connected component on each axial slice of a ``[z, y, x]`` segmentation mask
    (non-zero = lesion); components smaller than ``min_pixels`` are dropped."""
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a [z, y, x] mask, got shape {mask.shape}")
    structure = np.ones((3, 3), dtype=bool)
    boxes = []
    for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        labelled, count = ndimage.label(mask[z] != 0, structure=structure)
        sizes = np.bincount(labelled.ravel(), minlength=count + 1)
        for index, found in enumerate(ndimage.find_objects(labelled), start=1):
            if found is None or sizes[index] < min_pixels:
                continue
            rows, cols = found
            boxes.append(LesionBox(int(z), float(cols.start), float(rows.start), float(cols.stop),
                                   float(rows.stop), label))
    return boxes


def read_seed_lesion_csv(path: str | Path, known_patients: Iterable[str] | None = None
                         ) -> dict[str, dict[str, bool]]:
    """The CLEAR seed lesion CSV ``image,lesion_present,patient_id``: per patient, the slice images (file
    names) with their lesion flag. A patient not in ``known_patients`` is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: lesion CSV not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in ("image", "lesion_present", "patient_id") if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected "
                            "image,lesion_present,patient_id)")
        known = set(known_patients) if known_patients is not None else None
        out: dict[str, dict[str, bool]] = {}
        unknown: list[str] = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            patient, image, flag = row["patient_id"], Path(row["image"]).name, row["lesion_present"].lower()
            if not patient or not image:
                raise DataError(f"{path}: line {line}: empty image or patient_id")
            if flag not in ("0", "1", "0.0", "1.0", "true", "false"):
                raise DataError(f"{path}: line {line}: lesion_present is '{row['lesion_present']}', "
                                "expected 0/1")
            if known is not None and patient not in known:
                unknown.append(patient)
                continue
            out.setdefault(patient, {})[image] = flag in ("1", "1.0", "true")
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:5])
        raise DataError(f"{path}: patient_id(s) without a scan folder: {shown}")
    return out


def seed_lesion_boxes(flags: dict[str, bool], slice_names: Sequence[str], shape: tuple[int, int],
                      label: str | None = None) -> list[LesionBox]:
    """Whole-slice boxes for the slices flagged ``lesion_present`` (the seed CSV has no coordinates)."""
    height, width = shape
    boxes = []
    for index, name in enumerate(slice_names):
        if flags.get(name) or flags.get(Path(name).stem):
            boxes.append(LesionBox(index, 0.0, 0.0, float(width), float(height), label))
    return boxes
