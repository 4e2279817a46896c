"""Scan sources over files users have: a folder of CT volumes / DICOM series, the CLEAR seed PNG layout,
DeepLesion, and the public sample CTs.

Each source lists its scans when built (cheap: names and headers), reads a scan only in ``load``, and
fingerprints a scan by the bytes of its files (memoised by size and modification time).

Every source here is a :class:`~clear_bench.specs.PatientSource`: ``patient_id(scan_id)`` is the
pseudonymous patient of a scan, so that folds keep a patient's scans together. DICOM series and DeepLesion
hash their patient field with a salt (the ``patient_salt`` option, see :mod:`clear_bench.data.patients`);
the seed layout and the sample CTs have one scan per patient (the patient is the scan id); NIfTI / NRRD /
MHA files carry no patient (``None``: a task's label CSV can say it, ``patient_column``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clear_bench.data.annotations import (
    LESION_TYPES,
    boxes_from_mask,
    deeplesion_boxes,
    read_deeplesion_info,
    read_seed_lesion_csv,
    seed_lesion_boxes,
)
from clear_bench.data.dicom import Annotation, SeriesInfo, read_dicom_series, survey
from clear_bench.data.dicom_lesions import DEFAULT_LESION_NAMES, lesion_boxes
from clear_bench.data.files import files_digest, safe_id, scan_stem
from clear_bench.data.patients import dicom_patient, pseudonymous_patient
from clear_bench.data.readers import VolumeFileReader, is_volume_file, read_scan
from clear_bench.data.scan import Scan
from clear_bench.data.seed_png import list_png_slices, read_seed_png
from clear_bench.errors import ConfigError, DataError
from clear_bench.specs import Option, resolve_options, stable_hash

log = logging.getLogger(__name__)

MASK_SUFFIXES = ("_mask", "_seg", "_label", "-label", "-seg", "_lesion", "_tumor", "_tumour")


class _Digests:
    """File-content digests, recomputed only when a file's size or modification time changes."""

    def __init__(self) -> None:
        self._memo: dict[tuple, str] = {}

    def of(self, paths: list[Path], extra: Any = None) -> str:
        stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
        key = (stats, repr(extra))
        if key not in self._memo:
            self._memo[key] = stable_hash({"files": files_digest(paths), "extra": extra}, 32)
        return self._memo[key]


def _root(options: Mapping[str, Any], key: str = "root") -> Path:
    value = options.get(key)
    if not value:
        raise ConfigError(f"option '{key}' is required")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: folder not found ({key})")
    return path


# --- a folder of CT volumes and DICOM series ---------------------------------------------------------


@dataclass
class _Entry:
    """One scan of a folder source: its file or DICOM folder, the series read and what came with it."""

    path: Path
    series: SeriesInfo | None = None
    folder_series: list[SeriesInfo] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


SERIES_POLICIES = ("largest", "thinnest", "all")


class FolderSource:
    """Every NIfTI / NRRD / MHA file and every DICOM patient folder under ``root``.

    A sub-folder of ``root`` is one patient's DICOM export, searched at any depth (study and series
    folders inside it, as archives lay them out). Only CT image series are scans; RTSTRUCT and SEG files
    give lesion boxes; scouts, SR, RT plans and doses, presentation states and other objects are skipped
    with a note. A folder with one CT series takes the folder's name as its id; several follow ``series``:
    ``largest`` (most slices) or ``thinnest`` (smallest slice spacing) give one scan named after the
    folder, ``all`` gives ``<folder>-s<k>`` (largest first); the choice is noted on the scan. With
    ``recursive``, every folder's own files are one unit instead (ids join the relative path with ``_``,
    or with ``ids: name`` are the file or folder name alone).
    Volume files are scans named after the file; with ``masks``, a segmentation with the same name
    (optionally ``_mask``, ``_seg``, ``-label``...) gives lesion boxes (connected components per slice).

    Patients: a DICOM series' patient is its PatientID hashed with ``patient_salt`` (``None`` when the
    PatientID is empty or an anonymiser's placeholder); a volume file has no patient (``None``)."""

    name = "folder"

    def __init__(self, root: Path, masks: Path | None = None, mask_label: str | None = None,
                 recursive: bool = False, patient_salt: str | None = None, series: str = "largest",
                 lesion_names: Sequence[str] = DEFAULT_LESION_NAMES, ids: str = "path") -> None:
        if series not in SERIES_POLICIES:
            raise ConfigError(f"series: expected one of {', '.join(SERIES_POLICIES)}, got {series!r}")
        self.root, self.masks, self.mask_label = root, masks, mask_label
        self.series_policy, self.lesion_names = series, tuple(lesion_names)
        self._name_ids = ids == "name"
        self._salt = patient_salt
        self._entries: dict[str, _Entry] = {}
        self.skipped: list[str] = []
        """Folders and objects that are not scans, one line each (logged when found)."""
        self._digests = _Digests()
        self._discover(recursive)
        self._mask_files = self._find_masks() if masks else {}

    def _discover(self, recursive: bool) -> None:
        skip = self.masks.resolve() if self.masks else None

        def skipped(path: Path) -> bool:
            resolved = path.resolve()
            inside = skip is not None and (resolved == skip or skip in resolved.parents)
            return path.name.startswith(".") or inside

        folders = [self.root, *(sorted(p for p in self.root.rglob("*") if p.is_dir()) if recursive else [])]
        found: list[tuple[str, _Entry]] = []
        for folder in folders:
            if folder != self.root and skipped(folder):
                continue
            for path in sorted(folder.iterdir()):
                if skipped(path):
                    continue
                if is_volume_file(path):
                    found.append((self._id(path, scan_stem(path)), _Entry(path)))
                elif path.is_dir() and not recursive:
                    found.extend(self._series_in(path, deep=True))
            if recursive and folder != self.root:
                found.extend(self._series_in(folder, deep=False))
        for scan_id, entry in found:
            if scan_id in self._entries:
                raise DataError(f"{entry.path}: scan id '{scan_id}' also used by "
                                f"{self._entries[scan_id].path}; rename one of them")
            self._entries[scan_id] = entry
        for line in self.skipped:
            log.info("folder source: %s", line)
        if not self._entries:
            raise DataError(f"{self.root}: no CT scans (NIfTI, NRRD, MHA/MHD files or DICOM series folders)")

    def _series_in(self, folder: Path, deep: bool) -> list[tuple[str, _Entry]]:
        found = survey(folder, recursive=deep, patient_salt=self._salt)
        base = self._id(folder, folder.name)
        self.skipped += [f"{folder}: {line}" for line in found.skipped]
        if not found.series:
            if found.unreadable:  # listed, so that the run reports it among the scans left out
                return [(base, _Entry(folder, error="; ".join(found.unreadable[:3])))]
            if found.skipped or found.annotations:
                self.skipped.append(f"{folder}: no CT image series")
            return []
        notes = [f"skipped in this folder: {line}" for line in found.skipped]
        error = "; ".join(found.unreadable[:3]) if found.unreadable else None
        if error:  # a missing slice would silently distort the volume: refuse the folder's scans
            error += " (a file of this patient folder cannot be read; its scans are left out)"
        chosen = self._choose(found.series)
        entries = []
        for k, series in enumerate(chosen):
            scan_id = base if len(chosen) == 1 else f"{base}-s{k + 1}"
            entry = _Entry(folder, series, found.series, found.annotations, list(notes), error)
            if len(found.series) > 1:
                others = [s.describe() for s in found.series if s not in chosen]
                entry.notes.append(f"{len(found.series)} CT series; series '{self.series_policy}' read the "
                                   f"one of {series.describe()}"
                                   + (f" (not read: {'; '.join(others)})" if others else ""))
            entries.append((scan_id, entry))
        return entries

    def _choose(self, series: list[SeriesInfo]) -> list[SeriesInfo]:
        if self.series_policy == "all" or len(series) == 1:
            return list(series)
        if self.series_policy == "thinnest":
            return [min(series, key=lambda s: (s.slice_spacing, -len(s.files), s.pseudonym))]
        return [series[0]]  # largest: survey() sorts by size

    def _id(self, path: Path, stem: str) -> str:
        if self._name_ids:
            return safe_id(stem)
        relative = path.parent.relative_to(self.root) if path.parent != self.root else None
        prefix = "_".join(relative.parts) + "_" if relative is not None and relative.parts else ""
        return safe_id(prefix + stem)

    def _find_masks(self) -> dict[str, Path]:
        assert self.masks is not None
        if not self.masks.is_dir():
            raise DataError(f"{self.masks}: mask folder not found (masks)")
        masks: dict[str, Path] = {}
        for path in sorted(self.masks.iterdir()):
            if not is_volume_file(path):
                continue
            stem = scan_stem(path)
            for suffix in MASK_SUFFIXES:
                if stem.endswith(suffix) and stem[: -len(suffix)] in self._entries:
                    stem = stem[: -len(suffix)]
                    break
            key = safe_id(stem)
            if key in self._entries:
                masks[key] = path
        return masks

    def scan_ids(self) -> list[str]:
        return list(self._entries)

    def path(self, scan_id: str) -> Path:
        return self._lookup(scan_id).path

    def notes(self, scan_id: str) -> list[str]:
        """What discovery noted about ``scan_id`` (series chosen, objects skipped in its folder)."""
        return list(self._lookup(scan_id).notes)

    def _lookup(self, scan_id: str) -> _Entry:
        if scan_id not in self._entries:
            raise DataError(f"{self.root}: no scan '{scan_id}'")
        return self._entries[scan_id]

    def _files(self, scan_id: str) -> list[Path]:
        entry = self._lookup(scan_id)
        path = entry.path
        files = sorted(entry.series.files) if entry.series is not None else ([] if entry.error else [path])
        files += sorted(a.path for a in entry.annotations)
        if path.name.lower().endswith(".mhd"):
            files += [p for p in path.parent.glob(path.stem + ".*") if p.suffix.lower() in (".raw", ".zraw")]
        if scan_id in self._mask_files:
            files.append(self._mask_files[scan_id])
        return files

    def fingerprint(self, scan_id: str) -> str:
        entry = self._lookup(scan_id)
        return self._digests.of(self._files(scan_id), {"mask_label": self.mask_label, "error": entry.error,
                                                       "lesion_names": list(self.lesion_names)})

    def patient_id(self, scan_id: str) -> str | None:
        """The salted hash of a DICOM series' PatientID; ``None`` for volume files and unknown IDs."""
        series = self._lookup(scan_id).series
        return series.patient if series is not None else None

    def site_id(self, scan_id: str) -> str | None:
        """The pseudonymous site of a DICOM series (institution, manufacturer and model, hashed with the
        salt); ``None`` for volume files."""
        series = self._lookup(scan_id).series
        return series.site if series is not None else None

    def reveals_patient(self, scan_id: str, value: str) -> bool:
        """Whether ``value`` (a label CSV's patient cell) is the raw DICOM PatientID of ``scan_id``."""
        patient = self.patient_id(scan_id)
        return patient is not None and dicom_patient(value, self._salt) == patient

    def load(self, scan_id: str) -> Scan:
        entry = self._lookup(scan_id)
        if entry.error is not None:
            raise DataError(entry.error)
        if entry.series is not None:
            scan = read_dicom_series(entry.path, scan_id=scan_id, series=entry.series)
            scan.notes[:0] = entry.notes
            scan.lesions = lesion_boxes(entry.annotations, entry.series, entry.folder_series, scan,
                                        self.lesion_names, self.mask_label)
        else:
            scan = VolumeFileReader().read(entry.path, scan_id)
        mask_path = self._mask_files.get(scan_id)
        if mask_path is not None:
            mask = read_scan(mask_path, scan_id).volume
            if mask.shape != scan.volume.shape:
                raise DataError(f"{mask_path}: mask shape {mask.shape} differs from scan {scan.volume.shape}")
            scan.lesions = boxes_from_mask(mask > 0.5, self.mask_label)
        for note in scan.notes:
            log.info("%s: %s", scan_id, note)
        return scan


def build_folder(options: Mapping[str, Any]) -> FolderSource:
    values = resolve_options(FOLDER_OPTIONS, options)
    masks = Path(values["masks"]).expanduser() if values["masks"] else None
    names = values["lesion_names"] or list(DEFAULT_LESION_NAMES)
    return FolderSource(_root(values), masks, values["mask_label"], bool(values["recursive"]),
                        values["patient_salt"], values["series"], [str(n) for n in names], values["ids"])


_SALT = Option(str, None, "salt of the hashed patient ids (default: $CLEAR_BENCH_PATIENT_SALT, else the "
               "public 'clear-bench-patients-v1'; set a secret one before split files leave your site)")

FOLDER_OPTIONS: dict[str, Option] = {
    "root": Option(Path, None, "folder of NIfTI/NRRD/MHA files and DICOM patient folders", required=True),
    "masks": Option(Path, None, "folder of lesion masks named like the scans (optional)"),
    "mask_label": Option(str, None, "lesion type of the boxes, e.g. lung (default: none for masks, the ROI "
                         "name or segment label for RTSTRUCT and SEG)"),
    "recursive": Option(bool, False, "every sub-folder's own files are one unit (ids join the relative "
                        "path with _), instead of one patient folder searched at any depth"),
    "ids": Option(str, "path", "with recursive: ids join the relative path with _ (path), or are the file "
                  "or folder name alone (name; two alike are an error), as CT-RATE's VolumeName",
                  choices=("path", "name")),
    "series": Option(str, "largest", "several CT series in one folder: largest, thinnest, or all "
                     "(<folder>-s1, -s2...)", choices=SERIES_POLICIES),
    "lesion_names": Option(list, None, "RTSTRUCT ROI names / SEG segment labels that are lesions, "
                           "case-insensitive globs (default: GTV*, *tumor*, *tumour*, *lesion*, *nodule*)"),
    "patient_salt": _SALT,
}


# --- the CLEAR seed layout ---------------------------------------------------------------------------


class SeedPngSource:
    """One sub-folder of pre-windowed PNG slices per patient under ``root`` (id: the folder name), with
    optional whole-slice lesion boxes from the seed lesion CSV ``image,lesion_present,patient_id``.

    One folder is one patient and one scan: ``patient_id(scan_id) == scan_id``, the folder name, which is
    also the lesion CSV's ``patient_id`` (the seed's own pseudonym)."""

    name = "seed-png"

    def __init__(self, root: Path, lesions_csv: Path | None = None,
                 spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        self.root, self.spacing = root, spacing
        self._folders = {safe_id(p.name): p for p in sorted(root.iterdir())
                         if p.is_dir() and not p.name.startswith(".")}
        if not self._folders:
            raise DataError(f"{root}: no patient folders (the seed layout has one folder of PNG slices each)")
        self._flags = read_seed_lesion_csv(lesions_csv, known_patients=self._folders) if lesions_csv else {}
        self._digests = _Digests()

    def scan_ids(self) -> list[str]:
        return list(self._folders)

    def path(self, scan_id: str) -> Path:
        if scan_id not in self._folders:
            raise DataError(f"{self.root}: no patient folder '{scan_id}'")
        return self._folders[scan_id]

    def patient_id(self, scan_id: str) -> str:
        self.path(scan_id)  # an unknown id is an error
        return scan_id

    def fingerprint(self, scan_id: str) -> str:
        files = list_png_slices(self.path(scan_id))
        return self._digests.of(files, {"flags": sorted(self._flags.get(scan_id, {}).items()),
                                        "spacing": self.spacing})

    def load(self, scan_id: str) -> Scan:
        folder = self.path(scan_id)
        scan = read_seed_png(folder, scan_id, self.spacing)
        flags = self._flags.get(scan_id)
        if flags:
            names = [p.name for p in list_png_slices(folder)]
            scan.lesions = seed_lesion_boxes(flags, names, scan.volume.shape[1:])
        return scan


SEED_OPTIONS: dict[str, Option] = {
    "root": Option(Path, None, "folder with one sub-folder of PNG slices per patient", required=True),
    "lesions_csv": Option(Path, None, "seed lesion CSV image,lesion_present,patient_id (optional)"),
    "spacing": Option(list, None, "slice spacing [z, y, x] in mm (PNG carries none; default 1,1,1)"),
}


def build_seed_png(options: Mapping[str, Any]) -> SeedPngSource:
    values = resolve_options(SEED_OPTIONS, options)
    spacing = values["spacing"] or [1.0, 1.0, 1.0]
    if len(spacing) != 3:
        raise ConfigError(f"seed-png spacing {spacing}: expected [z, y, x] in mm")
    lesions = Path(values["lesions_csv"]).expanduser() if values["lesions_csv"] else None
    return SeedPngSource(_root(values), lesions, tuple(float(v) for v in spacing))


# --- DeepLesion ------------------------------------------------------------------------------------------


class DeepLesionSource:
    """DeepLesion's ``Images_png/<patient>_<study>_<series>/<slice>.png`` (16-bit, HU + 32768) with the
    key-slice boxes and coarse lesion types of ``DL_info.csv``. A series is one scan; only series present
    on disk are served. Lesion-location labels exist for series whose every lesion has a known type.

    Patients: the series ``<patient>_<study>_<series>`` belongs to patient ``<patient>`` (DL_info's
    ``Patient_index``), hashed with ``patient_salt`` like every patient field; a patient's studies and
    series then share a fold."""

    name = "deeplesion"

    def __init__(self, images: Path, info: Path, include_noisy: bool = True,
                 splits: list[int] | None = None, patient_salt: str | None = None) -> None:
        self.images = images
        self._salt = patient_salt
        records = read_deeplesion_info(info)
        self._records = {
            series: [r for r in rows if include_noisy or not r.noisy]
            for series, rows in records.items()
            if (splits is None or any(r.split in splits for r in rows)) and (images / series).is_dir()
        }
        self._records = {k: v for k, v in self._records.items() if v}
        if not self._records:
            raise DataError(f"{images}: none of the series of {info} is on disk")
        skipped = len(records) - len(self._records)
        if skipped:
            log.info("deeplesion: %d series of %s are not on disk or filtered out", skipped, info.name)
        self._digests = _Digests()

    def scan_ids(self) -> list[str]:
        return sorted(self._records)

    def path(self, scan_id: str) -> Path:
        if scan_id not in self._records:
            raise DataError(f"{self.images}: no DeepLesion series '{scan_id}'")
        return self.images / scan_id

    def _slices(self, scan_id: str) -> list[Path]:
        return list_png_slices(self.path(scan_id))

    def fingerprint(self, scan_id: str) -> str:
        return self._digests.of(self._slices(scan_id), [r.__dict__ for r in self._records[scan_id]])

    def patient_id(self, scan_id: str) -> str | None:
        self.path(scan_id)  # an unknown id is an error
        return pseudonymous_patient(self._records[scan_id][0].patient, self._salt)

    def load(self, scan_id: str) -> Scan:
        from PIL import Image

        files = self._slices(scan_id)
        planes = []
        for path in files:
            try:
                with Image.open(path) as image:
                    planes.append(np.asarray(image, dtype=np.int32).astype(np.float32) - 32768.0)
            except OSError as exc:
                raise DataError(f"{path}: unreadable DeepLesion PNG ({exc})") from exc
            if planes[-1].shape != planes[0].shape:
                raise DataError(f"{path}: slice size {planes[-1].shape} differs from the first slice")
        numbers = [int(p.stem) if p.stem.isdigit() else -1 for p in files]
        records = self._records[scan_id]
        scan = Scan(scan_id, np.stack(planes), records[0].spacing)
        scan.lesions = deeplesion_boxes(records, numbers)
        return scan

    def task_labels(self, task: str) -> tuple[list[str], dict[str, np.ndarray]]:
        if task != "lesion-location":
            raise KeyError(f"DeepLesion carries no labels for task '{task}'")
        labels = {}
        for series, records in self._records.items():
            types = [r.lesion_type for r in records]
            if all(t is not None for t in types):
                labels[series] = np.array([t in types for t in LESION_TYPES], dtype=np.float32)
        return list(LESION_TYPES), labels


DEEPLESION_OPTIONS: dict[str, Option] = {
    "root": Option(Path, None, "folder holding DL_info.csv and Images_png/", required=True),
    "info": Option(Path, None, "DL_info.csv (default: <root>/DL_info.csv)"),
    "images": Option(Path, None, "Images_png folder (default: <root>/Images_png)"),
    "include_noisy": Option(bool, True, "keep lesions flagged Possibly_noisy"),
    "splits": Option(list, None, "Train_Val_Test splits to keep (1 train, 2 val, 3 test; default all)"),
    "patient_salt": _SALT,
}


def build_deeplesion(options: Mapping[str, Any]) -> DeepLesionSource:
    values = resolve_options(DEEPLESION_OPTIONS, options)
    root = _root(values)
    info = Path(values["info"]).expanduser() if values["info"] else root / "DL_info.csv"
    images = Path(values["images"]).expanduser() if values["images"] else root / "Images_png"
    if not images.is_dir():
        raise DataError(f"{images}: DeepLesion Images_png folder not found")
    splits = [int(s) for s in values["splits"]] if values["splits"] else None
    return DeepLesionSource(images, info, bool(values["include_noisy"]), splits, values["patient_salt"])


# --- public sample CTs ------------------------------------------------------------------------------------


class SamplesSource:
    """The public sample CTs (``clear-bench data samples``), lung tumour masks as lesion boxes.

    Each sample is a different public case (the packages record no patient, and the DICOM sample's
    PatientID is empty), taken as one patient each: ``patient_id(scan_id) == scan_id``."""

    name = "samples"

    def __init__(self, dest: str | None = None, download: bool = True,
                 names: list[str] | None = None) -> None:
        from clear_bench.data.samples import fetch_samples, missing_samples, sample_paths

        if download:
            self._paths = fetch_samples(dest, names, log=log.info)
        else:
            missing = missing_samples(dest, names)
            if missing:
                raise DataError(f"sample CT(s) {', '.join(missing)} not in the cache; run "
                                "`clear-bench data samples` (or set download: true)")
            self._paths = sample_paths(dest, names)

    def scan_ids(self) -> list[str]:
        return list(self._paths)

    def path(self, scan_id: str) -> Path:
        return self._entry(scan_id).image

    def _entry(self, scan_id: str):
        if scan_id not in self._paths:
            raise DataError(f"no sample CT '{scan_id}' (known: {', '.join(self._paths)})")
        return self._paths[scan_id]

    def patient_id(self, scan_id: str) -> str:
        self._entry(scan_id)  # an unknown id is an error
        return scan_id

    def fingerprint(self, scan_id: str) -> str:
        sample = self._entry(scan_id).sample
        return stable_hash({"image": sample.image_sha256, "mask": sample.mask_sha256,
                            "label": sample.mask_label}, 32)

    def load(self, scan_id: str) -> Scan:
        entry = self._entry(scan_id)
        scan = read_scan(entry.image, scan_id)
        if entry.mask is not None:
            mask = read_scan(entry.mask, scan_id).volume
            if mask.shape != scan.volume.shape:
                raise DataError(f"{entry.mask}: mask shape {mask.shape} differs from the scan's "
                                f"{scan.volume.shape}")
            scan.lesions = boxes_from_mask(mask > 0.5, entry.sample.mask_label)
        return scan


SAMPLES_OPTIONS: dict[str, Option] = {
    "dest": Option(Path, None, "cache folder of the samples (default: <user cache>/samples)",
                   must_exist=False),
    "download": Option(bool, True, "download missing samples from PyPI (pinned sdists, sha256-checked)"),
    "names": Option(list, None, "which samples (default: all)"),
}


def build_samples(options: Mapping[str, Any]) -> SamplesSource:
    values = resolve_options(SAMPLES_OPTIONS, options)
    dest = os.path.expanduser(values["dest"]) if values["dest"] else None
    return SamplesSource(dest, bool(values["download"]), values["names"])
