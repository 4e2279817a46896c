"""Scan readers: one small interface over the formats radiology researchers have.

``read_scan(path)`` picks the reader for ``path``: a NIfTI / NRRD / MHA / MHD file (SimpleITK), a DICOM
export folder or file (pydicom, see :mod:`clear_bench.data.dicom`; RTSTRUCT and SEG objects give lesion
boxes, :mod:`clear_bench.data.dicom_lesions`), or a folder of pre-windowed PNG slices
(the CLEAR seed layout, :mod:`clear_bench.data.seed_png`). Every volume comes back as ``[z, y, x]`` float32
HU in LPS orientation (axis 0 inferior -> superior, rows anterior -> posterior, columns patient right ->
left) with spacing ``(dz, dy, dx)`` in mm, its direction and origin. A volume with NaN or infinite voxels
is refused, and values outside the plausible HU range are noted (:mod:`clear_bench.data.voxels`). Any
failure is a :class:`DataError` naming the file.

SimpleITK handles the volume formats because one library then covers NIfTI (qform/sform), NRRD and
MetaImage with the same physical-space conventions (spacing, direction cosines, reorientation), and NIfTI
scaling (``scl_slope``/``scl_inter``) is applied by the reader.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from clear_bench.data.dicom import find_series, image_to_arrays, is_dicom_file, read_dicom_series, survey
from clear_bench.data.dicom_lesions import lesion_boxes
from clear_bench.data.files import safe_id, scan_stem
from clear_bench.data.scan import Scan, ScanFailure
from clear_bench.data.seed_png import IMAGE_SUFFIXES, read_seed_png
from clear_bench.data.voxels import check_finite, report_hu_range
from clear_bench.errors import DataError, UserError

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


class ScanReader(Protocol):
    """A format: ``can_read(path)`` says whether it applies, ``read(path, scan_id)`` returns the scan."""

    name: str

    def can_read(self, path: Path) -> bool: ...

    def read(self, path: Path, scan_id: str | None = None) -> Scan: ...


def is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


class VolumeFileReader:
    """NIfTI, NRRD and MetaImage files through SimpleITK."""

    name = "volume"

    def can_read(self, path: Path) -> bool:
        return is_volume_file(path)

    def read(self, path: Path, scan_id: str | None = None) -> Scan:
        import SimpleITK as sitk

        _check_not_empty(path)
        if path.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_header(path)
            _check_nifti_complete(path)
            _check_nifti_finite(path)
        elif path.name.lower().endswith((".nrrd", ".nhdr")):
            _check_nrrd_magic(path)
        else:
            _check_metaimage_header(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise DataError(f"{path}: cannot read image ({_first_line(exc)})") from exc
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise DataError(f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                            "expected a greyscale CT volume")
        if image.GetDimension() == 4 and image.GetSize()[3] == 1:
            image = image[:, :, :, 0]
        if image.GetDimension() not in (2, 3):
            raise DataError(f"{path}: {image.GetDimension()}-D image; expected a 3-D CT volume")
        image = sitk.Cast(image, sitk.sitkFloat32)
        volume, spacing, direction, origin = image_to_arrays(image)
        check_finite(volume, path)
        scan = Scan(scan_id or safe_id(scan_stem(path)), volume, spacing, direction, origin=origin)
        report_hu_range(scan, path)
        return scan


class DicomReader:
    """A DICOM export folder (its CT series, searched at any depth when the folder itself holds no DICOM
    file; the largest series when several) with the lesion boxes of its RTSTRUCT and SEG objects, or one
    DICOM file of a series."""

    name = "dicom"

    def can_read(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".dcm" or is_dicom_file(path)
        if not path.is_dir():
            return False
        return any(is_dicom_file(p) for p in _first_files(path)) or any(
            is_dicom_file(p) for p in itertools.islice((q for q in path.rglob("*") if q.is_file()), 256))

    def read(self, path: Path, scan_id: str | None = None) -> Scan:
        if path.is_file():
            folder = path.parent
            series = [s for s in find_series(folder) if path in s.files]
            if not series:
                raise DataError(f"{path}: not a DICOM image file")
            return read_dicom_series(folder, scan_id=scan_id, series=series[0])
        deep = not any(is_dicom_file(p) for p in _first_files(path))
        found = survey(path, recursive=deep)
        if found.unreadable:
            raise DataError(found.unreadable[0])
        if not found.series:
            raise DataError(f"{path}: no CT image series" + (f" ({'; '.join(found.skipped)})"
                                                            if found.skipped else ""))
        if len(found.series) > 1:
            log.warning("%s holds %d CT series; reading the largest (%s)", path, len(found.series),
                        found.series[0].describe())
        scan = read_dicom_series(path, scan_id=scan_id, series=found.series[0])
        scan.notes += [f"skipped in this folder: {line}" for line in found.skipped]
        scan.lesions = lesion_boxes(found.annotations, found.series[0], found.series, scan)
        return scan


class SeedPngReader:
    """A folder of pre-windowed PNG slices (the CLEAR seed layout)."""

    name = "seed-png"

    def can_read(self, path: Path) -> bool:
        return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in _first_files(path))

    def read(self, path: Path, scan_id: str | None = None) -> Scan:
        return read_seed_png(path, scan_id)


READERS: list[ScanReader] = [VolumeFileReader(), DicomReader(), SeedPngReader()]


def read_scan(path: str | Path, scan_id: str | None = None) -> Scan:
    """Read the scan at ``path`` (file or folder) with the reader for its format."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    for reader in READERS:
        if reader.can_read(path):
            return reader.read(path, scan_id)
    if path.is_dir():
        raise DataError(f"{path}: folder holds neither a DICOM series nor PNG slices")
    raise DataError(f"{path}: unknown scan format (expected {', '.join(VOLUME_SUFFIXES)}, a DICOM series "
                    "folder or a folder of PNG slices)")


def load_all(source, scan_ids: Iterable[str] | None = None) -> tuple[list[Scan], list[ScanFailure]]:
    """Load every scan of ``source`` (a :class:`~clear_bench.specs.ScanSource`); a scan that fails is
    recorded and the others are still read."""
    scans: list[Scan] = []
    failures: list[ScanFailure] = []
    for scan_id in list(scan_ids if scan_ids is not None else source.scan_ids()):
        try:
            scans.append(source.load(scan_id))
        except UserError as exc:
            failures.append(ScanFailure(scan_id, str(exc)))
        except (OSError, ValueError, RuntimeError) as exc:
            failures.append(ScanFailure(scan_id, f"{type(exc).__name__}: {exc}"))
        if failures and failures[-1].scan_id == scan_id:
            log.warning("scan %s skipped: %s", scan_id, failures[-1].error)
    return scans, failures


def _first_files(folder: Path, limit: int = 64) -> Sequence[Path]:
    out = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            out.append(path)
            if len(out) >= limit:
                break
    return out


def _check_nifti_header(path: Path) -> None:
    """nibabel's error for a file without a NIfTI header ("cannot work out file type") names no cause:
    check that the header is all there (a gzip stream cut inside it) and begins with a NIfTI size."""
    import gzip
    import zlib

    with open(path, "rb") as handle:
        stream = gzip.GzipFile(fileobj=handle) if path.name.lower().endswith(".gz") else handle
        try:
            head = stream.read(348)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: truncated or corrupt gzip stream ({_first_line(exc)})") from exc
    if len(head) < 348:
        where = "gzip stream" if path.name.lower().endswith(".gz") else "NIfTI file"
        raise DataError(f"{path}: truncated {where}: {len(head)} bytes, shorter than a NIfTI header (348)")
    sizes = {int.from_bytes(head[:4], order) for order in ("little", "big")}
    if not sizes & {348, 540}:
        raise DataError(f"{path}: not a NIfTI file (its first field, sizeof_hdr, is not 348 or 540: it "
                        f"starts with {head[:8]!r})")


def _check_nifti_complete(path: Path) -> None:
    """ITK reads a truncated NIfTI without complaint (the missing voxels become zeros), so compare the
    data the header promises with the bytes present: the file size, or a gzip stream's ISIZE trailer."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        shape = header.get_data_shape()
        # a single-file NIfTI keeps its data after the header and extensions, whatever vox_offset says
        offset = max(int(header["vox_offset"]),
                     int(getattr(header, "single_vox_offset", 352)) + header.extensions.get_sizeondisk())
        expected = int(offset + int(np.prod(shape)) * header.get_data_dtype().itemsize)
    except Exception as exc:
        damaged = _gzip_damage(path) if path.name.lower().endswith(".gz") else None
        if damaged:  # nibabel reads past the header to tell NIfTI-1 from 2, and says only that it cannot
            raise DataError(f"{path}: truncated or corrupt gzip stream ({damaged})") from exc
        raise DataError(f"{path}: not a readable NIfTI file ({_first_line(exc)})") from exc
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as handle:
            handle.seek(max(0, size - 4))
            trailer = handle.read(4)
        stored = int.from_bytes(trailer, "little") if len(trailer) == 4 else -1
        if stored != expected % (1 << 32):
            raise DataError(f"{path}: truncated or corrupt gzip stream (expected {expected} bytes of NIfTI "
                            "data and header)")
    elif size < expected:
        raise DataError(f"{path}: truncated NIfTI ({size} bytes, the header promises {expected})")


def _gzip_damage(path: Path) -> str | None:
    """Why the gzip stream of ``path`` cannot be read to its end, or ``None`` when it can."""
    import gzip
    import zlib

    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        return f"{_first_line(exc)} after {total} bytes"
    return None


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")


def _check_nrrd_magic(path: Path) -> None:
    """ITK's error for a file that is not NRRD names no cause; the format's first bytes say it."""
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if not magic.startswith(b"NRRD000"):
        raise DataError(f"{path}: not an NRRD file (it starts with {magic[:8]!r}, not the magic 'NRRD000x')")


_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8}


def _check_metaimage_header(path: Path) -> None:
    """A MetaImage header is ``key = value`` lines up to ``ElementDataFile``; ITK reports neither a missing
    key nor missing inline voxels by name, so both are checked here."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    fields: dict[str, str] = {}
    header_bytes = 0
    for raw in head.splitlines(keepends=True):
        header_bytes += len(raw)
        key, sep, value = raw.decode("latin-1").partition("=")
        if not sep:
            raise DataError(f"{path}: not a MetaImage header (line {len(fields) + 1} is not 'key = value')")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in fields:
            raise DataError(f"{path}: MetaImage header has no '{key}' field")
    item = _MET_BYTES.get(fields["ElementType"])
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if fields["ElementDataFile"] != "LOCAL" or compressed or item is None or "HeaderSize" in fields:
        return
    try:
        voxels = int(np.prod([int(v) for v in fields["DimSize"].split()]))
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError as exc:
        raise DataError(f"{path}: MetaImage field DimSize or ElementNumberOfChannels is not a list of "
                        f"integers ({fields['DimSize']!r})") from exc
    expected = voxels * channels * item
    present = path.stat().st_size - header_bytes
    if present < expected:
        raise DataError(f"{path}: truncated MetaImage ({present} bytes of voxel data; DimSize and "
                        f"ElementType promise {expected})")


def _check_nifti_finite(path: Path) -> None:
    """ITK's NIfTI reader turns NaN and infinite voxels into zeros, so a float NIfTI is checked on its
    own data (read by nibabel) before the rule of :func:`~clear_bench.data.voxels.check_finite` applies."""
    import nibabel as nib

    image = nib.load(str(path))
    if np.issubdtype(image.header.get_data_dtype(), np.floating):
        check_finite(np.asanyarray(image.dataobj), path)


def _first_line(exc: BaseException) -> str:
    # ITK errors pile up source locations and a generic "Reason:"; keep the most specific line
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Reason:", "sitk::ERROR"))] or lines
    return (useful[-1] if useful else type(exc).__name__)[:240]
