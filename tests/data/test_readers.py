"""Reading real CT files written by the tests: NIfTI, NRRD, MHA, DICOM series, seed PNG folders."""

import gzip

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from clear_bench.data.dicom import find_series, read_dicom_series
from clear_bench.data.readers import ScanFailure, load_all, read_scan
from clear_bench.data.seed_png import list_png_slices
from clear_bench.errors import DataError

SPACING = (2.5, 0.8, 0.7)  # dz, dy, dx


def _nifti(path, hu, affine, slope=None, inter=None):
    data = np.ascontiguousarray(hu.transpose(2, 1, 0))  # nibabel arrays are [i, j, k] = [x, y, z]
    if slope is None:
        image = nib.Nifti1Image(data.astype(np.int16), affine)
    else:
        stored = np.rint((data - inter) / slope).astype(np.int16)
        image = nib.Nifti1Image(stored, affine)
        image.header.set_slope_inter(slope, inter)
    nib.save(image, str(path))


def test_nifti_in_lps_storage(tmp_path, truth):
    dz, dy, dx = SPACING
    path = tmp_path / "case_01.nii.gz"
    _nifti(path, truth, np.diag([-dx, -dy, dz, 1.0]))  # voxel axes point to L, P, S
    scan = read_scan(path)
    assert scan.scan_id == "case_01"
    assert scan.volume.shape == truth.shape and scan.volume.dtype == np.float32
    np.testing.assert_allclose(scan.volume, truth)
    np.testing.assert_allclose(scan.spacing, SPACING, rtol=1e-6)
    assert not scan.prewindowed


def test_nifti_in_ras_storage_is_reoriented_and_rescaled(tmp_path, truth):
    dz, dy, dx = SPACING
    path = tmp_path / "ras.nii"
    _nifti(path, truth, np.diag([dx, dy, dz, 1.0]), slope=2.0, inter=-1024.0)  # axes point to R, A, S
    scan = read_scan(path, scan_id="given")
    assert scan.scan_id == "given"
    # in LPS the row and column axes run the other way, and scl_slope / scl_inter are applied
    np.testing.assert_allclose(scan.volume, truth[:, ::-1, ::-1], atol=1.0)
    np.testing.assert_allclose(scan.spacing, SPACING, rtol=1e-6)


def test_nrrd_and_mha(tmp_path, truth, nrrd_writer, mha_writer):
    nrrd_writer(tmp_path / "a.nrrd", truth, SPACING)
    mha_writer(tmp_path / "b.mha", truth, SPACING)
    for name in ("a.nrrd", "b.mha"):
        scan = read_scan(tmp_path / name)
        np.testing.assert_allclose(scan.volume, truth)
        np.testing.assert_allclose(scan.spacing, SPACING, rtol=1e-6)


def test_dicom_series_sorted_by_position_with_rescale(tmp_path, truth, dicom_writer):
    folder = tmp_path / "Doe_Jane_MRN-0042"
    dicom_writer(folder, truth, SPACING, slope=0.5, intercept=-1024.0, shuffle_seed=3)
    scan = read_scan(folder)
    np.testing.assert_allclose(scan.volume, truth, atol=0.5)
    np.testing.assert_allclose(scan.spacing, SPACING, rtol=1e-4)
    # the id is a pseudonym: neither the folder name nor any DICOM identifier
    assert scan.scan_id.startswith("dcm-") and "Doe" not in scan.scan_id and "MRN" not in scan.scan_id
    kept = repr({k: v for k, v in vars(scan).items() if k != "volume"})
    assert "Doe" not in kept and "MRN" not in kept and "Hospital" not in kept


def test_dicom_descending_positions_and_flipped_rows(tmp_path, truth, dicom_writer):
    folder = tmp_path / "flipped"
    # row direction towards patient right, slice normal towards feet: the reader must undo both
    dicom_writer(folder, truth[::-1, :, ::-1], SPACING, row_dir=(-1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0),
                 shuffle_seed=1)
    scan = read_scan(folder)
    np.testing.assert_allclose(scan.volume, truth, atol=0.5)
    np.testing.assert_allclose(scan.spacing, SPACING, rtol=1e-4)


def test_two_series_in_one_folder_are_told_apart(tmp_path, truth, dicom_writer):
    folder = tmp_path / "mixed"
    dicom_writer(folder, truth, SPACING, series_uid="1.2.826.0.1.1", prefix="a")
    other = truth[:4] + 500.0
    dicom_writer(folder, other, (5.0, 0.8, 0.7), series_uid="1.2.826.0.1.2", prefix="b", shuffle_seed=9)
    series = find_series(folder)
    assert [len(s.files) for s in series] == [6, 4]
    assert len({s.pseudonym for s in series}) == 2
    small = read_dicom_series(folder, series_uid="1.2.826.0.1.2")
    np.testing.assert_allclose(small.volume, other, atol=0.5)
    assert small.spacing[0] == pytest.approx(5.0)
    largest = read_scan(folder)  # without a UID: the largest series
    np.testing.assert_allclose(largest.volume, truth, atol=0.5)
    # a single file names its own series
    one_of_b = sorted(folder.glob("b*.dcm"))[0]
    assert read_scan(one_of_b).volume.shape == other.shape


def test_seed_png_folder(tmp_path):
    folder = tmp_path / "patient_7"
    folder.mkdir()
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 256, size=(12, 16, 16), dtype=np.uint8)
    for k in range(12):  # names whose lexical order is not the slice order
        Image.fromarray(planes[k]).save(folder / f"p7_slice_{k + 1}.png")
    assert [p.name for p in list_png_slices(folder)][:3] == ["p7_slice_1.png", "p7_slice_2.png",
                                                              "p7_slice_3.png"]
    scan = read_scan(folder)
    assert scan.prewindowed and scan.scan_id == "patient_7"
    np.testing.assert_allclose(scan.volume, planes / 255.0, atol=1e-6)
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.fromarray(np.repeat(planes[0][..., None], 3, axis=2)).save(rgb / "0.png")
    Image.fromarray(planes[1].astype(np.uint16) * 257).save(rgb / "1.png")  # 16-bit grey
    scan = read_scan(rgb)
    np.testing.assert_allclose(scan.volume[0], planes[0] / 255.0, atol=1e-6)
    np.testing.assert_allclose(scan.volume[1], planes[1] / 255.0, atol=1e-4)


def test_bad_inputs_name_the_file(tmp_path, truth, dicom_writer):
    good = tmp_path / "good.nii.gz"
    _nifti(good, truth, np.diag([-0.7, -0.8, 2.5, 1.0]))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"truncated\.nii\.gz"):
        read_scan(truncated)
    raw = tmp_path / "short.nii"
    raw.write_bytes(gzip.decompress(good.read_bytes())[:400])
    with pytest.raises(DataError, match=r"short\.nii"):
        read_scan(raw)

    broken = tmp_path / "broken_series"
    paths = dicom_writer(broken, truth, SPACING, without_pixels=2, shuffle_seed=None)
    with pytest.raises(DataError, match=paths[2].name) as info:
        read_scan(broken)
    assert "pixel data" in str(info.value)

    empty = tmp_path / "no_pngs"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no_pngs"):
        read_scan(empty)
    with pytest.raises(DataError, match="no_pngs"):
        list_png_slices(empty)
    with pytest.raises(DataError, match=r"missing\.mha"):
        read_scan(tmp_path / "missing.mha")
    with pytest.raises(DataError, match="unknown scan format"):
        read_scan(_touch(tmp_path / "x.xyz"))


def _touch(path):
    path.write_text("?")
    return path


class _Files:
    """A list of files as a scan source (ids are file names)."""

    name = "files"

    def __init__(self, paths):
        self.paths = {p.name: p for p in paths}

    def scan_ids(self):
        return list(self.paths)

    def load(self, scan_id):
        return read_scan(self.paths[scan_id])

    def fingerprint(self, scan_id):
        return scan_id


def test_load_all_records_failures_and_carries_on(tmp_path, truth):
    paths = []
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        _nifti(tmp_path / name, truth, np.eye(4))
        paths.append(tmp_path / name)
    paths[1].write_bytes(b"garbage")
    scans, failures = load_all(_Files(paths))
    assert [s.scan_id for s in scans] == ["a", "c"]
    assert failures == [ScanFailure("b.nii.gz", failures[0].error)] and "b.nii.gz" in failures[0].error


def test_empty_wrong_magic_and_truncated_volume_files_say_why(tmp_path, truth, nrrd_writer, mha_writer):
    nrrd_writer(tmp_path / "good.nrrd", truth, SPACING)
    mha_writer(tmp_path / "good.mha", truth, SPACING)
    nrrd, mha = (tmp_path / "good.nrrd").read_bytes(), (tmp_path / "good.mha").read_bytes()
    cases = {
        "empty.nrrd": (b"", r"empty\.nrrd: empty file \(0 bytes\)"),
        "empty.mha": (b"", r"empty\.mha: empty file \(0 bytes\)"),
        "magic.nrrd": (b"XXXX" + nrrd[4:], r"magic\.nrrd: not an NRRD file .*'NRRD000x'"),
        "magic.mha": (b"\x89PNG junk\n" * 4, r"magic\.mha: not a MetaImage header"),
        "nodims.mha": (mha.replace(b"NDims = 3\n", b""), r"nodims\.mha: MetaImage header has no 'NDims'"),
        "short.mha": (mha[: len(mha) // 2], r"short\.mha: truncated MetaImage .*promise 5760"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=message):
            read_scan(tmp_path / name)
    assert read_scan(tmp_path / "good.mha").volume.shape == truth.shape
