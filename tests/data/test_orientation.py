"""One canonical orientation for every format: a volume written in two orientations (NIfTI with nibabel,
NRRD with pynrrd, MHA with SimpleITK, a DICOM series with pydicom) reads back as identical LPS slices
(axis 0 inferior -> superior, rows anterior -> posterior, columns right -> left) with the same spacing,
direction and origin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clear_bench.data.readers import read_scan

SPACING = (2.5, 0.8, 0.7)  # dz, dy, dx
ORIGIN = np.array([-90.0, -120.0, 40.0])  # LPS mm of canonical voxel [0, 0, 0]
LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _truth() -> np.ndarray:
    """Every voxel tells where it is; no two slices, rows or columns alike, no symmetry to hide a flip."""
    z, y, x = np.meshgrid(np.arange(5), np.arange(7), np.arange(9), indexing="ij")
    return (-1000.0 + 200.0 * z + 12.0 * y + x).astype(np.float32)


def _far(axis_size: int, step: float) -> float:
    return (axis_size - 1) * step


def write_nifti(path: Path, hu: np.ndarray, variant: str) -> None:
    """``lps``: voxel axes x, y, z point L, P, S. ``ras-permuted``: stored as [z, y, x] with rows and
    columns reversed (axes S, A, R)."""
    import nibabel as nib

    dz, dy, dx = SPACING
    _, y, x = hu.shape
    affine = np.eye(4)
    if variant == "lps":  # RAS affine of an LPS-ordered array
        data = hu.transpose(2, 1, 0)
        affine[:3, :3] = np.diag([-dx, -dy, dz])
        affine[:3, 3] = [-ORIGIN[0], -ORIGIN[1], ORIGIN[2]]
    else:
        data = hu[:, ::-1, ::-1]  # i = z (S), j = rows reversed (A), k = columns reversed (R)
        affine[:3, :3] = [[0, 0, dx], [0, dy, 0], [dz, 0, 0]]
        affine[:3, 3] = [-(ORIGIN[0] + _far(x, dx)), -(ORIGIN[1] + _far(y, dy)), ORIGIN[2]]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data).astype(np.int16), affine), str(path))


def write_nrrd(path: Path, hu: np.ndarray, variant: str) -> None:
    """``lps``: LPS space, axes x, y, z. ``ras-flipped``: RAS space, slices stored head to feet."""
    import nrrd

    dz, dy, dx = SPACING
    z = hu.shape[0]
    data = hu.transpose(2, 1, 0)  # pynrrd's default Fortran order: data[x, y, z]
    if variant == "lps":
        header = {"space": "left-posterior-superior", "space origin": ORIGIN.tolist(),
                  "space directions": np.diag([dx, dy, dz]).tolist()}
    else:
        data = data[:, :, ::-1]
        top = [-ORIGIN[0], -ORIGIN[1], ORIGIN[2] + _far(z, dz)]
        header = {"space": "right-anterior-superior", "space origin": top,
                  "space directions": np.diag([-dx, -dy, -dz]).tolist()}
    header["kinds"] = ["domain"] * 3
    nrrd.write(str(path), np.ascontiguousarray(data).astype(np.int16), header)


def write_mha(path: Path, hu: np.ndarray, variant: str) -> None:
    """``lps``: identity direction. ``flipped``: rows and slices stored in reverse, negative direction."""
    import SimpleITK as sitk

    dz, dy, _ = SPACING
    z, y, _ = hu.shape
    if variant == "lps":
        image = sitk.GetImageFromArray(hu.astype(np.int16))
        image.SetDirection(LPS)
        image.SetOrigin(ORIGIN.tolist())
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(hu[::-1, ::-1, :]).astype(np.int16))
        image.SetDirection((1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0))
        image.SetOrigin((ORIGIN[0], ORIGIN[1] + _far(y, dy), ORIGIN[2] + _far(z, dz)))
    image.SetSpacing((SPACING[2], SPACING[1], SPACING[0]))
    sitk.WriteImage(image, str(path))


def write_dicom(folder: Path, hu: np.ndarray, variant: str, writer) -> None:
    """``lps``: rows along +x, slices up. ``flipped``: rows towards the patient's right, slices down."""
    dz, _, dx = SPACING
    z, _, x = hu.shape
    if variant == "lps":
        writer(folder, hu, SPACING, origin=tuple(ORIGIN), shuffle_seed=2)
    else:
        start = ORIGIN + np.array([_far(x, dx), 0.0, _far(z, dz)])
        writer(folder, hu[::-1, :, ::-1], SPACING, row_dir=(-1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0),
               origin=tuple(start), shuffle_seed=5)


FORMATS = {"nifti": ("scan.nii.gz", "ras-permuted"), "nrrd": ("scan.nrrd", "ras-flipped"),
           "mha": ("scan.mha", "flipped"), "dicom": ("series", "flipped")}


def _write(fmt: str, variant: str, folder: Path, hu: np.ndarray, dicom_writer) -> Path:
    name = FORMATS[fmt][0]
    path = folder / variant / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dicom":
        write_dicom(path, hu, variant, dicom_writer)
    else:
        {"nifti": write_nifti, "nrrd": write_nrrd, "mha": write_mha}[fmt](path, hu, variant)
    return path


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_two_orientations_read_back_as_identical_lps_slices(fmt, tmp_path, dicom_writer):
    truth = _truth()
    scans = [read_scan(_write(fmt, variant, tmp_path, truth, dicom_writer))
             for variant in ("lps", FORMATS[fmt][1])]
    for scan in scans:
        np.testing.assert_allclose(scan.volume, truth, atol=0.5)
        np.testing.assert_allclose(scan.spacing, SPACING, rtol=1e-5)
        np.testing.assert_allclose(scan.direction, LPS, atol=1e-6)
        np.testing.assert_allclose(scan.origin, ORIGIN, atol=1e-3)
        # index_of inverts the geometry: the origin is voxel [0, 0, 0], the far corner the last voxel
        far = ORIGIN + np.array([_far(9, SPACING[2]), _far(7, SPACING[1]), _far(5, SPACING[0])])
        np.testing.assert_allclose(scan.index_of(np.stack([ORIGIN, far])), [[0, 0, 0], [4, 6, 8]],
                                   atol=1e-4)  # NIfTI keeps its affine in float32
    np.testing.assert_array_equal(scans[0].volume, scans[1].volume)


def test_every_format_gives_the_same_slices(tmp_path, dicom_writer):
    truth = _truth()
    volumes = {fmt: read_scan(_write(fmt, FORMATS[fmt][1], tmp_path / fmt, truth, dicom_writer)).volume
               for fmt in FORMATS}
    for fmt, volume in volumes.items():
        np.testing.assert_allclose(volume, volumes["dicom"], atol=0.5, err_msg=fmt)
    assert volumes["nifti"][0, 0, 0] == truth.min()  # slice 0 is the most inferior, row 0 anterior
