"""DICOM series: find the series in a folder, read one into HU with its geometry, keep no identifying field.

pydicom reads the headers and pixels (so we see exactly which tags are used: SeriesInstanceUID,
ImagePositionPatient, ImageOrientationPatient, PixelSpacing, RescaleSlope/Intercept); pixel data in a
compressed transfer syntax that pydicom cannot decode here falls back to SimpleITK (GDCM). Slices are
ordered by their position along the slice normal, and the volume is reoriented to LPS so that axis 0 runs
inferior -> superior, rows anterior -> posterior and columns patient right -> left.

The one identifying tag read is ``PatientID``: :func:`find_series` hashes it at once into a pseudonymous
patient (salted, see :mod:`clear_bench.data.patients`) so that scans of one patient can share a fold; the
raw value is neither kept, nor logged, nor returned.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clear_bench.data.patients import dicom_patient
from clear_bench.data.scan import Scan
from clear_bench.errors import DataError

log = logging.getLogger(__name__)

_HEADER_TAGS = ["SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns",
                "InstanceNumber", "SOPClassUID", "NumberOfFrames", "Modality", "PatientID"]


@dataclass
class SeriesInfo:
    """One series found in a folder: its UID (kept in memory only), files and slice count, and its
    pseudonymous patient (``None`` when the PatientID is empty, a placeholder, or differs between files)."""

    uid: str
    files: list[Path] = field(default_factory=list)
    patient: str | None = None

    @property
    def pseudonym(self) -> str:
        """A stable id that does not reveal the UID: ``dcm-`` + 16 hex digits of its sha256."""
        return "dcm-" + hashlib.sha256(self.uid.encode()).hexdigest()[:16]


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` carries the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def find_series(folder: str | Path, recursive: bool = False,
                patient_salt: str | None = None) -> list[SeriesInfo]:
    """The image series under ``folder``, largest first; files that are not DICOM images are skipped.
    Each series' ``patient`` is its PatientID hashed with ``patient_salt`` (default: see
    :func:`clear_bench.data.patients.patient_salt`)."""
    import pydicom

    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    by_uid: dict[str, SeriesInfo] = {}
    patients: dict[str, set[str | None]] = {}
    for path in sorted(p for p in folder.glob(pattern) if p.is_file()):
        if path.name.upper() == "DICOMDIR" or not is_dicom_file(path):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception as exc:
            raise DataError(f"{path}: unreadable DICOM header ({exc})") from exc
        uid = str(header.get("SeriesInstanceUID", "") or f"no-series-uid:{folder}")
        by_uid.setdefault(uid, SeriesInfo(uid)).files.append(path)
        patients.setdefault(uid, set()).add(dicom_patient(str(header.get("PatientID", "") or ""),
                                                          patient_salt))
    for uid, series in by_uid.items():
        found = patients[uid]
        if len(found) == 1:
            series.patient = next(iter(found))
        else:
            log.warning("%s: the files of series %s carry %d different PatientIDs; its patient is unknown",
                        folder, series.pseudonym, len(found))
    return sorted(by_uid.values(), key=lambda s: (-len(s.files), s.pseudonym))


def read_dicom_series(folder: str | Path, series_uid: str | None = None, scan_id: str | None = None,
                      series: SeriesInfo | None = None) -> Scan:
    """Read one series of ``folder`` (the given UID, else the largest) as a :class:`Scan` in HU."""
    folder = Path(folder)
    if series is None:
        found = find_series(folder)
        if not found:
            raise DataError(f"{folder}: no DICOM image files")
        if series_uid is not None:
            matches = [s for s in found if s.uid == series_uid]
            if not matches:
                raise DataError(f"{folder}: no series with the requested SeriesInstanceUID")
            series = matches[0]
        else:
            series = found[0]
            if len(found) > 1:
                log.warning("%s holds %d series; reading the largest (%d files)", folder, len(found),
                            len(series.files))
    volume, spacing, direction = _read_files(series.files, folder)
    return Scan(scan_id or series.pseudonym, volume, spacing, direction)


def _read_files(files: list[Path], folder: Path) -> tuple[np.ndarray, tuple[float, float, float],
                                                        tuple[float, ...]]:
    import pydicom

    if len(files) == 1:
        header = pydicom.dcmread(files[0], stop_before_pixels=True)
        if int(header.get("NumberOfFrames", 1) or 1) > 1:  # enhanced multi-frame CT
            return _via_simpleitk(files[0])
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise DataError(f"{path}: unreadable DICOM file ({exc})") from exc
        if "PixelData" not in ds:
            raise DataError(f"{path}: DICOM file has no pixel data (PixelData missing)")
        slices.append((path, ds))
    rows = {(int(ds.Rows), int(ds.Columns)) for _, ds in slices}
    if len(rows) > 1:
        raise DataError(f"{folder}: slices of one series differ in size: {sorted(rows)}")
    row_dir, col_dir = _orientation(slices[0])
    normal = np.cross(row_dir, col_dir)
    positions = []
    for path, ds in slices:
        ipp = ds.get("ImagePositionPatient")
        if ipp is None or len(ipp) != 3:
            if len(slices) > 1:
                raise DataError(f"{path}: ImagePositionPatient missing; slices cannot be ordered")
            ipp = (0.0, 0.0, 0.0)
        positions.append(np.asarray([float(v) for v in ipp]))
    along = np.array([float(p @ normal) for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    steps = np.diff(along)
    if len(steps) and np.min(np.abs(steps)) < 1e-3:
        dup = slices[order[int(np.argmin(np.abs(steps))) + 1]][0]
        raise DataError(f"{dup}: two slices of the series share one position (several acquisitions or "
                        "phases in one SeriesInstanceUID)")
    if len(steps):
        dz = float(np.median(steps))
        if np.max(np.abs(steps - dz)) > 0.1 * dz + 0.05:
            log.warning("%s: uneven slice spacing (%.2f..%.2f mm); using the median %.2f mm", folder,
                        float(steps.min()), float(steps.max()), dz)
    else:
        first = slices[0][1]
        dz = float(first.get("SpacingBetweenSlices", 0) or first.get("SliceThickness", 1.0) or 1.0)
    pixel_spacing = slices[0][1].get("PixelSpacing") or [1.0, 1.0]
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    planes = [_hu(slices[i][0], slices[i][1]) for i in order]
    volume = np.stack(planes).astype(np.float32)
    origin = positions[int(order[0])]
    return _to_lps(volume, (dz, dy, dx), row_dir, col_dir, normal, origin)


def _orientation(item: tuple[Path, object]) -> tuple[np.ndarray, np.ndarray]:
    path, ds = item
    iop = ds.get("ImageOrientationPatient")  # type: ignore[attr-defined]
    if iop is None or len(iop) != 6:
        return np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    values = np.asarray([float(v) for v in iop])
    row, col = values[:3], values[3:]
    if np.linalg.norm(row) < 1e-6 or np.linalg.norm(col) < 1e-6:
        raise DataError(f"{path}: ImageOrientationPatient is degenerate")
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def _hu(path: Path, ds) -> np.ndarray:
    """Stored values -> HU with the slice's own RescaleSlope / RescaleIntercept."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        try:  # a compressed transfer syntax without a pydicom decoder: GDCM applies the rescale itself
            volume, _, _ = _via_simpleitk(path)
            return volume[0]
        except Exception:
            raise DataError(f"{path}: cannot decode DICOM pixel data ({exc})") from exc
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected one greyscale frame, got pixel array of shape {pixels.shape}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * slope + intercept


def _to_lps(volume: np.ndarray, spacing: tuple[float, float, float], row: np.ndarray, col: np.ndarray,
            normal: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float],
                                                            tuple[float, ...]]:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((spacing[2], spacing[1], spacing[0]))
    image.SetDirection(tuple(np.stack([row, col, normal], axis=1).ravel().tolist()))
    image.SetOrigin(tuple(float(v) for v in origin))
    return image_to_arrays(image)


def _via_simpleitk(path: Path) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    import SimpleITK as sitk

    return image_to_arrays(sitk.ReadImage(str(path), sitk.sitkFloat32))


def image_to_arrays(image) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    """A SimpleITK image reoriented to LPS -> ``([z, y, x] float32, (dz, dy, dx), direction)``."""
    import SimpleITK as sitk

    if image.GetDimension() == 3:
        image = sitk.DICOMOrient(image, "LPS")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    sx, sy, *rest = image.GetSpacing()
    sz = rest[0] if rest else 1.0
    direction = tuple(float(v) for v in image.GetDirection())
    if array.ndim == 2:
        array = array[None]
        direction = (direction[0], direction[1], 0.0, direction[2], direction[3], 0.0, 0.0, 0.0, 1.0)
    return array, (float(sz), float(sy), float(sx)), direction
