"""DICOM series: find the CT series in a folder, read one into HU with its geometry, keep no identifying
field.

:func:`survey` sorts a folder's files by SOP class (:mod:`clear_bench.data.dicom_objects`): only CT image
series are scans; RTSTRUCT and SEG files are lesion annotations; scouts, reports, RT plans and doses,
presentation states and other objects are skipped with a note.

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

from clear_bench.data.dicom_objects import Kind, classify
from clear_bench.data.patients import dicom_patient, dicom_site
from clear_bench.data.scan import Scan
from clear_bench.data.voxels import check_finite, report_hu_range
from clear_bench.errors import DataError

log = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, tuple[float, float, float], tuple[float, ...], tuple[float, float, float]]
"""``(volume [z, y, x], spacing (dz, dy, dx), direction (row-major 3x3), origin (x, y, z) mm, LPS)``."""

_HEADER_TAGS = ["SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns",
                "InstanceNumber", "SOPClassUID", "SOPInstanceUID", "NumberOfFrames", "Modality", "PatientID",
                "ImageType", "FrameOfReferenceUID", "SliceThickness", "SpacingBetweenSlices", "Manufacturer",
                "ManufacturerModelName", "InstitutionName"]


@dataclass
class SeriesInfo:
    """One CT image series found in a folder: its UID and frame of reference (kept in memory only), files,
    the SOP instance UIDs and positions of those files, and its pseudonymous patient (``None`` when the
    PatientID is empty, a placeholder, or differs between files)."""

    uid: str
    files: list[Path] = field(default_factory=list)
    patient: str | None = None
    frame_of_reference: str = field(default="", repr=False)
    instance_uids: set[str] = field(default_factory=set, repr=False)
    positions: list[tuple[float, float, float]] = field(default_factory=list, repr=False)
    orientation: tuple[float, ...] | None = None
    thickness: float | None = None
    site: str | None = None
    """The pseudonymous acquisition site: institution, manufacturer and model, hashed with the salt."""

    @property
    def pseudonym(self) -> str:
        """A stable id that does not reveal the UID: ``dcm-`` + 16 hex digits of its sha256."""
        return "dcm-" + hashlib.sha256(self.uid.encode()).hexdigest()[:16]

    @property
    def slice_spacing(self) -> float:
        """The median distance of the slice positions along the slice normal (mm), else the slice
        thickness; ``inf`` when neither is known."""
        if len(self.positions) > 1 and self.orientation is not None:
            normal = np.cross(self.orientation[:3], self.orientation[3:])
            along = np.sort(np.asarray(self.positions) @ normal)
            steps = np.diff(along)
            steps = steps[steps > 1e-3]
            if len(steps):
                return float(np.median(steps))
        return float(self.thickness) if self.thickness else float("inf")

    def describe(self) -> str:
        """``"<n> files, <spacing> mm"`` (nothing identifying)."""
        spacing = self.slice_spacing
        return f"{len(self.files)} files" + (f", {spacing:.2f} mm apart" if np.isfinite(spacing) else "")


@dataclass
class Annotation:
    """An RTSTRUCT or SEG file of a folder, read only when a scan of that folder is loaded."""

    path: Path
    kind: Kind


@dataclass
class DicomFolder:
    """What a folder of DICOM files holds: CT image series (largest first), annotation objects, the
    files that are never scans (one note each kind), and files whose header could not be read."""

    series: list[SeriesInfo] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` carries the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def survey(folder: str | Path, recursive: bool = False, patient_salt: str | None = None) -> DicomFolder:
    """Sort the DICOM files under ``folder`` by what they are (see :mod:`clear_bench.data.dicom_objects`):
    CT series become :class:`SeriesInfo` (largest first), RTSTRUCT and SEG files :class:`Annotation`, and
    scouts, reports, RT plans and doses, presentation states and images of other modalities a note in
    ``skipped``. A file whose header cannot be read is listed in ``unreadable`` with the reason."""
    import pydicom

    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    found = DicomFolder()
    by_uid: dict[str, SeriesInfo] = {}
    patients: dict[str, set[str | None]] = {}
    others: dict[str, int] = {}
    for path in sorted(p for p in folder.glob(pattern) if p.is_file()):
        if path.name.upper() == "DICOMDIR" or not is_dicom_file(path):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            image_type = tuple(str(v) for v in _values(header.get("ImageType")))
            sop_class = str(header.get("SOPClassUID", "")
                            or header.file_meta.get("MediaStorageSOPClassUID", "") or "")
            if not any(tag in header for tag in ("SOPClassUID", "SeriesInstanceUID", "Modality")):
                raise ValueError("the data set holds no SOPClassUID, SeriesInstanceUID or Modality: "
                                 "truncated, or not a DICOM object")
            kind = classify(sop_class, str(header.get("Modality", "") or ""), image_type)
        except Exception as exc:
            found.unreadable.append(f"{path}: unreadable DICOM header ({_short(exc)})")
            continue
        if kind.kind in (Kind.RTSTRUCT, Kind.SEG):
            found.annotations.append(Annotation(path, kind.kind))
            continue
        if kind.kind is not Kind.CT:
            others[kind.what] = others.get(kind.what, 0) + 1
            continue
        uid = str(header.get("SeriesInstanceUID", "") or f"no-series-uid:{folder}")
        series = by_uid.setdefault(uid, SeriesInfo(uid))
        series.files.append(path)
        series.frame_of_reference = series.frame_of_reference or str(header.get("FrameOfReferenceUID", ""))
        series.instance_uids.add(str(header.get("SOPInstanceUID", "")))
        ipp, iop = header.get("ImagePositionPatient"), header.get("ImageOrientationPatient")
        if ipp is not None and len(ipp) == 3:
            series.positions.append(tuple(float(v) for v in ipp))
        if iop is not None and len(iop) == 6 and series.orientation is None:
            series.orientation = tuple(float(v) for v in iop)
        if header.get("SliceThickness") and series.thickness is None:
            series.thickness = float(header.SliceThickness)
        if series.site is None:
            series.site = dicom_site(*(str(header.get(tag, "") or "") for tag in
                                       ("InstitutionName", "Manufacturer", "ManufacturerModelName")),
                                     salt=patient_salt)
        patients.setdefault(uid, set()).add(dicom_patient(str(header.get("PatientID", "") or ""),
                                                          patient_salt))
    for what, count in sorted(others.items()):
        found.skipped.append(f"{count} {what} file(s): not a CT image series")
    for uid, series in by_uid.items():
        ids = patients[uid]
        if len(ids) == 1:
            series.patient = next(iter(ids))
        else:
            log.warning("%s: the files of series %s carry %d different PatientIDs; its patient is unknown",
                        folder, series.pseudonym, len(ids))
    found.series = sorted(by_uid.values(), key=lambda s: (-len(s.files), s.pseudonym))
    return found


def find_series(folder: str | Path, recursive: bool = False,
                patient_salt: str | None = None) -> list[SeriesInfo]:
    """The CT image series under ``folder``, largest first (scouts, RTSTRUCT, SEG, SR and other objects
    are not series of a scan). Each series' ``patient`` is its PatientID hashed with ``patient_salt``
    (default: see :func:`clear_bench.data.patients.patient_salt`). A file whose header cannot be read is
    an error naming it."""
    found = survey(folder, recursive, patient_salt)
    if found.unreadable:
        raise DataError(found.unreadable[0])
    return found.series


def _values(element) -> list:
    if element is None:
        return []
    if isinstance(element, str):
        return [element]
    try:
        return list(element)
    except TypeError:
        return [element]


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


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
    notes: list[str] = []
    volume, spacing, direction, origin = _read_files(series.files, folder, notes)
    check_finite(volume, folder)
    scan = Scan(scan_id or series.pseudonym, volume, spacing, direction, origin=origin, notes=notes)
    report_hu_range(scan, folder)
    return scan


def _read_files(files: list[Path], folder: Path, notes: list[str] | None = None) -> Arrays:
    """The series' volume in LPS; what the scan's user should know (uneven spacing) goes to ``notes``."""
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
            note = (f"uneven slice spacing ({float(steps.min()):.2f}..{float(steps.max()):.2f} mm); "
                    f"using the median {dz:.2f} mm")
            log.warning("%s: %s", folder, note)
            if notes is not None:
                notes.append(note)
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
            volume = _via_simpleitk(path)[0]
            return volume[0]
        except Exception:
            raise DataError(f"{path}: cannot decode DICOM pixel data ({exc})") from exc
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected one greyscale frame, got pixel array of shape {pixels.shape}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * slope + intercept


def _to_lps(volume: np.ndarray, spacing: tuple[float, float, float], row: np.ndarray, col: np.ndarray,
            normal: np.ndarray, origin: np.ndarray) -> Arrays:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((spacing[2], spacing[1], spacing[0]))
    image.SetDirection(tuple(np.stack([row, col, normal], axis=1).ravel().tolist()))
    image.SetOrigin(tuple(float(v) for v in origin))
    return image_to_arrays(image)


def _via_simpleitk(path: Path) -> Arrays:
    import SimpleITK as sitk

    return image_to_arrays(sitk.ReadImage(str(path), sitk.sitkFloat32))


def image_to_arrays(image) -> Arrays:
    """A SimpleITK image reoriented to LPS -> ``([z, y, x] float32, (dz, dy, dx), direction, origin)``:
    axis 0 runs inferior -> superior, rows anterior -> posterior, columns patient right -> left (for an
    axial acquisition; an oblique one keeps its nearest such axes)."""
    import SimpleITK as sitk

    if image.GetDimension() == 3:
        image = sitk.DICOMOrient(image, "LPS")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    sx, sy, *rest = image.GetSpacing()
    sz = rest[0] if rest else 1.0
    direction = tuple(float(v) for v in image.GetDirection())
    ox, oy, *oz = (float(v) for v in image.GetOrigin())
    if array.ndim == 2:
        array = array[None]
        direction = (direction[0], direction[1], 0.0, direction[2], direction[3], 0.0, 0.0, 0.0, 1.0)
    return array, (float(sz), float(sy), float(sx)), direction, (ox, oy, oz[0] if oz else 0.0)
