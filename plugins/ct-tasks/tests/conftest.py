"""Files for the source and task tests: real NIfTI / NRRD / MHA volumes and a DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_volume(path: Path, hu: np.ndarray, spacing=(3.0, 1.0, 1.0)) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.asarray(hu, dtype=np.int16))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def write_dicom(folder: Path, hu: np.ndarray, series_uid: str, prefix: str = "im", dz: float = 3.0,
                patient_id: str | None = None, birth_date: str | None = None) -> None:
    """A minimal single-frame CT series (LPS axial, slope 1, intercept -1024), files in shuffled order;
    ``patient_id`` and ``birth_date`` add those identifying fields, as a hospital export has them."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(hu.shape[0])
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.Modality, ds.SeriesInstanceUID = "Roe^Richard", "CT", series_uid
        if patient_id is not None:
            ds.PatientID = patient_id
        if birth_date is not None:
            ds.PatientBirthDate = birth_date
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.asarray(hu[k]) + 1024).astype(np.int16).tobytes()
        path = folder / f"{prefix}{n:02d}.dcm"
        try:
            ds.save_as(path, enforce_file_format=True)
        except TypeError:  # pydicom < 3
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(path, write_like_original=False)


@pytest.fixture
def volume_writer():
    return write_volume


@pytest.fixture
def dicom_series_writer():
    return write_dicom
