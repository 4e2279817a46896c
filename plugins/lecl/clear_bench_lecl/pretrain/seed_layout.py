"""The public CLEAR code's training layout as a scan source: PNG slices under one folder, and its lesion CSV.

The public code globs ``DIR/**/*.png`` and names a slice ``<folder>_<file>`` (DeepLesion's ``Images_png/
000001_01_01/109.png`` is ``000001_01_01_109.png``, the ``File_name`` of ``DL_info.csv``). Here every folder
holding PNG slices is one scan (id: its path under the root), slices in file-name order, and the lesion CSV
is read in either form:

* ``File_name,Bounding_boxes`` (what the public code reads; ``DL_info.csv`` itself qualifies): one row per
  lesion, the box ``"x0, y0, x1, y1"`` in pixels of the PNG; a slice with several rows has several lesions;
* ``image,lesion_present,patient_id`` (the public README's form): ``image`` is ``<folder>_<file>``, a
  ``<folder>/<file>`` path, or the file name of a slice in folder ``patient_id``; a slice with
  ``lesion_present`` 1 gets a whole-slice box (the form has no coordinates).

8-bit PNGs are pre-windowed grey images; 16-bit ones hold HU + ``hu_offset`` (DeepLesion: 32768) and are
windowed by the recipe's ``data.windows`` (``hu_offset: null`` reads them as pre-windowed too).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clear_bench.data.files import files_digest, safe_id
from clear_bench.data.scan import Scan
from clear_bench.data.seed_png import list_png_slices, read_png_slice
from clear_bench.errors import ConfigError, DataError
from clear_bench.specs import LesionBox, Option, SourceSpec, resolve_options, stable_hash

log = logging.getLogger(__name__)

SOURCE_NAME = "clear-seed-folder"
BOX_FORM = ("File_name", "Bounding_boxes")
README_FORM = ("image", "lesion_present", "patient_id")
WHOLE_SLICE = None
"""A lesion without coordinates (README form): the box is the whole slice."""


@dataclass(frozen=True)
class LesionTable:
    """Lesions by slice key ``<folder>_<file>``: boxes ``(x0, y0, x1, y1)`` or :data:`WHOLE_SLICE`."""

    path: Path
    form: str
    lesions: dict[str, list[tuple[float, float, float, float] | None]]
    rows: int


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0, y0, x1, y1"`` (DeepLesion's ``Bounding_boxes``) as floats, corners sorted; ``ValueError``
    when it is not four numbers."""
    parts = [part.strip() for part in text.strip().strip("[]()").split(",")]
    try:
        values = [float(part) for part in parts if part]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(f"expected four numbers 'x0, y0, x1, y1', got {text!r}")
    x0, x1 = sorted(values[0::2])
    y0, y1 = sorted(values[1::2])
    return x0, y0, x1, y1


def slice_key(folder: str, file_name: str) -> str:
    """The public code's name of a slice: ``<folder>_<file>``."""
    return f"{folder}_{file_name}"


def read_lesion_csv(path: str | Path) -> LesionTable:
    """Read a lesion CSV of either form (see the module); :class:`DataError` naming the file, line and
    column of a bad row or the columns that are missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: lesion CSV not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = {(name or "").strip() for name in reader.fieldnames or []}
        if set(BOX_FORM) <= header:
            form = "boxes"
        elif set(README_FORM) <= header:
            form = "flags"
        else:
            raise DataError(f"{path}: expected columns {','.join(BOX_FORM)} (the public code's form, e.g. "
                            f"DL_info.csv) or {','.join(README_FORM)} (its README's form); got "
                            f"{','.join(sorted(header)) or 'none'}")
        lesions: dict[str, list[tuple[float, float, float, float] | None]] = {}
        rows = 0
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            rows += 1
            if form == "boxes":
                key = Path(row["File_name"]).name
                if not key:
                    raise DataError(f"{path}: line {line}: File_name is empty")
                try:
                    box = parse_box(row["Bounding_boxes"])
                except ValueError as exc:
                    raise DataError(f"{path}: line {line}: Bounding_boxes: {exc}") from None
                lesions.setdefault(key, []).append(box)
                continue
            flag = row["lesion_present"].lower()
            if flag not in ("0", "1", "0.0", "1.0", "true", "false"):
                raise DataError(f"{path}: line {line}: lesion_present is {row['lesion_present']!r}, "
                                "expected 0 or 1")
            key = _readme_key(row["image"], row["patient_id"])
            if not key:
                raise DataError(f"{path}: line {line}: image is empty")
            if flag in ("1", "1.0", "true"):
                lesions[key] = [WHOLE_SLICE]
    return LesionTable(path, form, lesions, rows)


def _readme_key(image: str, patient: str) -> str:
    parts = Path(image.replace("\\", "/")).parts
    if len(parts) >= 2:
        return slice_key(parts[-2], parts[-1])
    name = parts[-1] if parts else ""
    if not name or not patient or name.startswith(f"{patient}_"):
        return name
    return slice_key(patient, name)


class SeedFolderSource:
    """Every folder of PNG slices under ``root`` is a scan (see the module); lesions from ``lesions``."""

    name = SOURCE_NAME

    def __init__(self, root: Path, lesions: Path | None = None, hu_offset: float | None = 32768.0,
                 spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        if not root.is_dir():
            raise DataError(f"{root}: training folder not found")
        self.root, self.hu_offset, self.spacing = root, hu_offset, spacing
        folders = sorted({p.parent for p in root.rglob("*") if p.suffix.lower() == ".png" and p.is_file()
                          and not p.name.startswith(".")})
        if not folders:
            raise DataError(f"{root}: no PNG slices under this folder (the public code reads DIR/**/*.png)")
        self._folders: dict[str, Path] = {}
        for folder in folders:
            relative = folder.relative_to(root).as_posix()
            scan_id = safe_id(relative.replace("/", "__") if relative != "." else root.name)
            if scan_id in self._folders:
                raise DataError(f"{folder}: scan id '{scan_id}' repeats that of {self._folders[scan_id]}")
            self._folders[scan_id] = folder
        self.table = read_lesion_csv(lesions) if lesions is not None else None
        if self.table is not None:
            self._check_matches()

    def _check_matches(self) -> None:
        """Rows whose slice is not on disk are skipped, as the public code does, but a CSV that names none
        of the slices is a mistake (another folder, another naming)."""
        assert self.table is not None
        on_disk = {slice_key(folder.name, p.name) for folder in self._folders.values()
                   for p in list_png_slices(folder)}
        matched = sum(1 for key in self.table.lesions if key in on_disk)
        if self.table.lesions and not matched:
            example = next(iter(self.table.lesions))
            found = sorted(on_disk)[0]
            raise DataError(f"{self.table.path}: none of its {len(self.table.lesions)} lesion slice(s) is "
                            f"under {self.root} (CSV names e.g. '{example}'; slices here are named "
                            f"<folder>_<file>, e.g. '{found}')")
        log.info("%s: %d of %d lesion slice(s) found under %s", self.table.path.name, matched,
                 len(self.table.lesions), self.root)

    def scan_ids(self) -> list[str]:
        return list(self._folders)

    def path(self, scan_id: str) -> Path:
        if scan_id not in self._folders:
            raise DataError(f"{self.root}: no folder of PNG slices with scan id '{scan_id}'")
        return self._folders[scan_id]

    def patient_id(self, scan_id: str) -> str:
        """The folder name: the README form's ``patient_id`` (one folder, one patient)."""
        return safe_id(self.path(scan_id).name)

    def fingerprint(self, scan_id: str) -> str:
        folder = self.path(scan_id)
        files = list_png_slices(folder)
        return stable_hash({"files": files_digest(files), "lesions": self._lesions_of(folder, files),
                            "hu_offset": self.hu_offset, "spacing": list(self.spacing)}, 32)

    def _lesions_of(self, folder: Path, files: list[Path]) -> list[list[Any]]:
        if self.table is None:
            return []
        found = []
        for index, path in enumerate(files):
            for box in self.table.lesions.get(slice_key(folder.name, path.name), []):
                found.append([index, None if box is None else list(box)])
        return found

    def load(self, scan_id: str) -> Scan:
        folder = self.path(scan_id)
        files = list_png_slices(folder)
        planes, kinds = [], set()
        for path in files:
            plane, hu = self._read(path)
            if planes and plane.shape != planes[0].shape:
                raise DataError(f"{path}: slice size {plane.shape} differs from {planes[0].shape} of "
                                f"{files[0].name}")
            planes.append(plane)
            kinds.add(hu)
        if len(kinds) > 1:
            raise DataError(f"{folder}: mixes 8-bit (pre-windowed) and 16-bit (HU) PNG slices")
        hu = kinds.pop()
        volume = np.stack(planes).astype(np.float32)
        scan = Scan(scan_id, volume, self.spacing, prewindowed=not hu)
        height, width = volume.shape[1:]
        for index, box in self._lesions_of(folder, files):
            x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, float(width), float(height))
            scan.lesions.append(LesionBox(index, x0, y0, x1, y1))
        return scan

    def _read(self, path: Path) -> tuple[np.ndarray, bool]:
        """One slice and whether it holds HU (16-bit with an offset) rather than a windowed image."""
        if self.hu_offset is not None:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as image:
                    mode = image.mode
                    if mode in ("I;16", "I;16B", "I;16L", "I"):
                        return np.asarray(image, dtype=np.int32).astype(np.float32) - self.hu_offset, True
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise DataError(f"{path}: unreadable PNG ({exc})") from exc
        return read_png_slice(path), False


SOURCE_OPTIONS: dict[str, Option] = {
    "root": Option(Path, None, "the training folder (the public code's DIR): PNG slices in sub-folders",
                   required=True),
    "lesions": Option(Path, None, "lesion CSV: File_name,Bounding_boxes (e.g. DL_info.csv) or "
                      "image,lesion_present,patient_id"),
    "hu_offset": Option((float, int, type(None)), 32768.0,
                        "16-bit PNGs hold HU + this (DeepLesion); null: read them as pre-windowed"),
    "spacing": Option(list, None, "slice spacing [z, y, x] in mm (PNG carries none; default 1,1,1)"),
}


def build_seed_folder(options: Mapping[str, Any]) -> SeedFolderSource:
    """The source from its options (:data:`SOURCE_OPTIONS`)."""
    values = resolve_options(SOURCE_OPTIONS, options)
    spacing = values["spacing"] or [1.0, 1.0, 1.0]
    if len(spacing) != 3 or not all(isinstance(v, int | float) and v > 0 for v in spacing):
        raise ConfigError(f"{SOURCE_NAME}: option 'spacing' is {spacing!r}, expected [z, y, x] in mm")
    lesions = Path(values["lesions"]).expanduser() if values["lesions"] else None
    offset = values["hu_offset"]
    return SeedFolderSource(Path(values["root"]).expanduser(), lesions,
                            None if offset is None else float(offset), tuple(float(v) for v in spacing))


SOURCE_SPEC = SourceSpec(
    name=SOURCE_NAME, build=build_seed_folder, options=SOURCE_OPTIONS,
    description="the public CLEAR code's training folder (PNG slices, DeepLesion Images_png style) with "
                "its lesion CSV (File_name,Bounding_boxes or image,lesion_present,patient_id)",
)
