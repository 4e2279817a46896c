"""The public CLEAR code's training folder and lesion CSV (both forms) as a scan source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clear_bench_lecl.pretrain.seed_layout import (
    SOURCE_NAME,
    build_seed_folder,
    parse_box,
    read_lesion_csv,
)
from PIL import Image

from clear_bench.errors import DataError
from clear_bench.registry import load_registry


def write_slices(folder: Path, names: list[str], size: int = 64, bits: int = 8) -> list[np.ndarray]:
    """PNG slices with distinct content; 16-bit ones hold HU + 32768 as DeepLesion's do."""
    folder.mkdir(parents=True, exist_ok=True)
    planes = []
    for index, name in enumerate(names):
        rng = np.random.default_rng(index + 7 * len(str(folder)))
        if bits == 8:
            plane = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(plane).save(folder / name)
        else:
            hu = rng.integers(-1000, 1500, (size, size))
            plane = (hu + 32768).astype(np.uint16)
            Image.fromarray(plane).save(folder / name)
            plane = hu
        planes.append(plane)
    return planes


def test_bounding_box_strings_parse_as_deeplesion_writes_them() -> None:
    assert parse_box("226.169, 90.0204, 241.252, 104.749") == (226.169, 90.0204, 241.252, 104.749)
    assert parse_box("30,40,10,20") == (10.0, 20.0, 30.0, 40.0)  # corners sorted
    with pytest.raises(ValueError, match="four numbers"):
        parse_box("1, 2, 3")


def test_the_code_form_keeps_every_lesion_of_a_slice(tmp_path: Path) -> None:
    csv = tmp_path / "DL_info.csv"
    csv.write_text('File_name,Key_slice_index,Bounding_boxes\n'
                   '000001_01_01_109.png,109,"10.5, 12, 30, 40"\n'
                   '000001_01_01_109.png,109,"1, 2, 3, 4"\n'
                   '000002_01_01_005.png,5,"5, 6, 7, 8"\n')
    table = read_lesion_csv(csv)
    assert table.form == "boxes" and table.rows == 3
    assert table.lesions["000001_01_01_109.png"] == [(10.5, 12.0, 30.0, 40.0), (1.0, 2.0, 3.0, 4.0)]
    assert table.lesions["000002_01_01_005.png"] == [(5.0, 6.0, 7.0, 8.0)]


def test_the_readme_form_accepts_its_three_ways_of_naming_a_slice(tmp_path: Path) -> None:
    csv = tmp_path / "lesions.csv"
    csv.write_text("image,lesion_present,patient_id\n"
                   "patient_001_slice_001.png,1,patient_001\n"   # the README's example
                   "patient_001_slice_002.png,0,patient_001\n"
                   "slice_003.png,1,patient_001\n"               # file name within the patient's folder
                   "patient_002/slice_001.png,1,patient_002\n")  # a path under the training folder
    table = read_lesion_csv(csv)
    assert table.form == "flags"
    assert sorted(table.lesions) == ["patient_001_slice_001.png", "patient_001_slice_003.png",
                                     "patient_002_slice_001.png"]
    assert table.lesions["patient_001_slice_001.png"] == [None]  # whole slice: no coordinates


@pytest.mark.parametrize(("text", "expected"), [
    ("File_name,Bounding_boxes\na_1.png,\"1, 2, x, 4\"\n", "line 2: Bounding_boxes: expected four numbers"),
    ("image,lesion_present,patient_id\na.png,maybe,p\n", "line 2: lesion_present is 'maybe'"),
    ("name,box\na.png,1\n", "expected columns File_name,Bounding_boxes"),
])
def test_a_bad_csv_names_its_file_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(DataError, match=expected) as info:
        read_lesion_csv(csv)
    assert str(csv) in str(info.value)


def test_the_source_reads_deeplesion_style_folders_with_their_boxes(tmp_path: Path) -> None:
    root = tmp_path / "DeepLesion" / "Images_png"
    first = write_slices(root / "000001_01_01", ["108.png", "109.png", "110.png"])
    write_slices(root / "000002_01_01", ["4.png", "5.png"])
    (root / "000001_01_01" / "notes.txt").write_text("not a slice")
    csv = tmp_path / "lesions.csv"
    csv.write_text('File_name,Bounding_boxes\n000001_01_01_109.png,"10, 12, 30, 40"\n'
                   '000001_01_01_109.png,"1, 2, 3, 4"\n000009_01_01_001.png,"1, 1, 2, 2"\n')
    source = build_seed_folder({"root": str(tmp_path / "DeepLesion"), "lesions": str(csv)})
    assert source.scan_ids() == ["Images_png__000001_01_01", "Images_png__000002_01_01"]
    scan = source.load("Images_png__000001_01_01")
    assert scan.prewindowed and scan.volume.shape == (3, 64, 64)
    np.testing.assert_allclose(scan.volume[1], first[1] / 255.0, atol=1e-6)  # slice order: 108, 109, 110
    assert [(b.slice_index, b.x0, b.y0, b.x1, b.y1) for b in scan.lesions] == [
        (1, 10.0, 12.0, 30.0, 40.0), (1, 1.0, 2.0, 3.0, 4.0)]
    assert source.load("Images_png__000002_01_01").lesions == []
    assert source.patient_id("Images_png__000001_01_01") == "000001_01_01"
    before = source.fingerprint("Images_png__000002_01_01")
    write_slices(root / "000002_01_01", ["6.png"])
    assert source.fingerprint("Images_png__000002_01_01") != before


def test_readme_flags_give_whole_slice_boxes_and_16_bit_slices_hold_hu(tmp_path: Path) -> None:
    hu = write_slices(tmp_path / "train" / "patient_001", ["slice_001.png", "slice_002.png"], size=48,
                      bits=16)
    csv = tmp_path / "lesions.csv"
    csv.write_text("image,lesion_present,patient_id\npatient_001_slice_002.png,1,patient_001\n")
    source = build_seed_folder({"root": str(tmp_path / "train"), "lesions": str(csv)})
    scan = source.load("patient_001")
    assert not scan.prewindowed  # windowed later by the recipe's data.windows
    np.testing.assert_array_equal(scan.volume[0], hu[0].astype(np.float32))
    assert [(b.slice_index, b.x0, b.y0, b.x1, b.y1) for b in scan.lesions] == [(1, 0.0, 0.0, 48.0, 48.0)]
    scaled = build_seed_folder({"root": str(tmp_path / "train"), "hu_offset": None}).load("patient_001")
    assert scaled.prewindowed and float(scaled.volume.max()) <= 1.0


def test_a_csv_that_names_none_of_the_slices_is_an_error(tmp_path: Path) -> None:
    write_slices(tmp_path / "train" / "p1", ["1.png"])
    csv = tmp_path / "lesions.csv"
    csv.write_text('File_name,Bounding_boxes\n1.png,"1, 2, 3, 4"\n')  # the folder part is missing
    with pytest.raises(DataError, match=r"none of its 1 lesion slice\(s\).*'1.png'.*'p1_1.png'"):
        build_seed_folder({"root": str(tmp_path / "train"), "lesions": str(csv)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG slices"):
        build_seed_folder({"root": str(tmp_path / "empty")})


def test_the_source_is_registered_by_the_plugin() -> None:
    spec = load_registry([]).source(SOURCE_NAME)
    assert {"root", "lesions", "hu_offset"} <= set(spec.options)
