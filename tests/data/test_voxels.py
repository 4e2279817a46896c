"""The voxel rule: NaN / infinite voxels refuse the volume with the file and the counts; implausible HU
values are kept and noted once per scan."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from clear_bench.data.readers import read_scan
from clear_bench.data.voxels import PLAUSIBLE_HU
from clear_bench.errors import DataError


def _float_nifti(path, hu: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)), np.diag([-1.0, -1.0, 2.0, 1.0])),
             str(path))


def test_nan_and_inf_voxels_refuse_the_volume_naming_file_and_counts(tmp_path):
    hu = np.full((6, 16, 16), -1000.0, np.float32)
    hu[2, 3:5, 3:6] = np.nan  # 6 NaN
    hu[4, 0, 0], hu[4, 0, 1], hu[5, 9, 9] = np.inf, np.inf, -np.inf
    path = tmp_path / "resampled.nii.gz"
    _float_nifti(path, hu)
    with pytest.raises(DataError) as error:
        read_scan(path)
    message = str(error.value)
    assert str(path) in message
    assert "6 NaN, 2 +inf, 1 -inf voxel(s) of 1536" in message and "refused" in message
    import SimpleITK as sitk

    for name in ("resampled.mha", "resampled.nrrd"):  # the same rule for every format
        sitk.WriteImage(sitk.GetImageFromArray(hu), str(tmp_path / name))
        with pytest.raises(DataError, match=rf"{name}: 6 NaN, 2 \+inf, 1 -inf voxel\(s\) of 1536"):
            read_scan(tmp_path / name)


def test_values_outside_the_hu_range_are_kept_and_noted_once(tmp_path, caplog):
    hu = np.full((4, 16, 16), -1000.0, np.float32)
    hu[:, 0, :] = -3024.0  # padding outside the field of view
    hu[1, 8, 8] = 9000.0  # metal
    path = tmp_path / "padded.nii.gz"
    _float_nifti(path, hu)
    with caplog.at_level(logging.WARNING):
        scan = read_scan(path)
    assert scan.volume.min() == -3024.0 and scan.volume.max() == 9000.0  # values are not altered
    lo, hi = PLAUSIBLE_HU
    assert scan.notes == [f"65 voxel(s) outside the plausible HU range {lo:.0f}..{hi:.0f} (found "
                          "-3024..9000); kept, windowing clips them"]
    assert caplog.text.count("outside the plausible HU range") == 1 and "padded.nii.gz" in caplog.text
    clean = tmp_path / "clean.nii.gz"
    _float_nifti(clean, np.full((4, 16, 16), 40.0, np.float32))
    assert read_scan(clean).notes == []
