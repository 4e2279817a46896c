"""Writers of real CT files for the reader tests (each test writes its own files under tmp_path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest


def truth_volume(z: int = 6, y: int = 20, x: int = 24) -> np.ndarray:
    """An HU volume whose every voxel tells where it is: slice 100 HU apart, a row and a column ramp."""
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    return (-1000.0 + 150.0 * zz + 10.0 * yy + xx).astype(np.float32)


def write_dicom_series(folder: Path, hu: np.ndarray, spacing: Sequence[float] = (2.5, 0.8, 0.7), *,
                       slope: float = 1.0, intercept: float = -1024.0, series_uid: str | None = None,
                       row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0), origin=(-90.0, -120.0, 40.0),
                       shuffle_seed: int | None = 0, prefix: str = "img", without_pixels: int | None = None,
                       patient_id: str | None = "MRN-0042", patient_ids: Sequence[str] | None = None,
                       institution: str = "General Hospital") -> list[Path]:
    """One CT series as single-frame files (with identifying fields, as a hospital export has them);
    ``patient_ids`` gives each file its own PatientID (a damaged export), else every file has
    ``patient_id`` (``None``: no PatientID element)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    dz, dy, dx = spacing
    normal = np.cross(row_dir, col_dir)
    order = list(range(hu.shape[0]))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    paths = []
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        sop_uid = generate_uid()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.PatientName, ds.PatientBirthDate = "Doe^Jane", "19700101"
        file_patient = patient_ids[n] if patient_ids is not None else patient_id
        if file_patient is not None:
            ds.PatientID = file_patient
        ds.InstitutionName = institution
        ds.Modality = "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.InstanceNumber = n + 1  # deliberately unrelated to position
        position = np.asarray(origin) + k * dz * normal
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{dy}", f"{dx}"]
        ds.SliceThickness = f"{dz}"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope}", f"{intercept}"
        stored = np.rint((hu[k] - intercept) / slope).astype(np.int16)
        if without_pixels != k:
            ds.PixelData = stored.tobytes()
        path = folder / f"{prefix}{n:03d}.dcm"
        try:
            ds.save_as(path, enforce_file_format=True)
        except TypeError:  # pydicom < 3
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(path, write_like_original=False)
        paths.append(path)
    return paths


def write_nrrd(path: Path, hu: np.ndarray, spacing: Sequence[float]) -> None:
    """A raw little-endian int16 NRRD in LPS space, written byte by byte from the format's spec."""
    dz, dy, dx = spacing
    z, y, x = hu.shape
    header = (
        "NRRD0004\n# written by the clear-bench tests\ntype: int16\ndimension: 3\n"
        "space: left-posterior-superior\n"
        f"sizes: {x} {y} {z}\n"
        f"space directions: ({dx},0,0) (0,{dy},0) (0,0,{dz})\n"
        "kinds: domain domain domain\nendian: little\nencoding: raw\nspace origin: (0,0,0)\n\n"
    )
    path.write_bytes(header.encode() + np.rint(hu).astype("<i2").tobytes())


def write_mha(path: Path, hu: np.ndarray, spacing: Sequence[float]) -> None:
    """A MetaImage with its data inline, written from the format's spec."""
    dz, dy, dx = spacing
    z, y, x = hu.shape
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\n"
        f"ElementSpacing = {dx} {dy} {dz}\nDimSize = {x} {y} {z}\nElementType = MET_SHORT\n"
        "ElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + np.rint(hu).astype("<i2").tobytes())


@pytest.fixture
def truth() -> np.ndarray:
    return truth_volume()


@pytest.fixture
def dicom_writer():
    return write_dicom_series


@pytest.fixture
def nrrd_writer():
    return write_nrrd


@pytest.fixture
def mha_writer():
    return write_mha
