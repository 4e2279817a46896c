"""Lesion boxes from DeepLesion's DL_info.csv, from segmentation masks and from the seed lesion CSV."""

import numpy as np
import pytest

from clear_bench.data.annotations import (
    LESION_TYPES,
    boxes_from_mask,
    deeplesion_boxes,
    read_deeplesion_info,
    read_seed_lesion_csv,
    seed_lesion_boxes,
)
from clear_bench.errors import DataError

HEADER = ("File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
          "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,Possibly_noisy,Slice_range,"
          "Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,Train_Val_Test")


def _row(name, key, box, kind, noisy=0, split=3):
    patient, study, series, _ = name.split("_")
    return (f'{name},{int(patient)},{int(study)},{int(series)},{key},"1, 2, 3, 4","{box}","20.1, 10.2",'
            f'"0.5, 0.5, 0.5",{kind},{noisy},"{key - 2}, {key + 2}","0.7, 0.7, 5","512, 512",'
            f'"-175, 275",F,60,{split}')


def test_deeplesion_info(tmp_path):
    path = tmp_path / "DL_info.csv"
    path.write_text("\n".join([HEADER,
                               _row("000001_01_01_109.png", 109, "226.1, 90.3, 300.0, 150.2", 4),
                               _row("000001_01_01_112.png", 112, "10, 20, 30, 40", 5, noisy=1),
                               _row("000002_02_01_020.png", 20, "1, 1, 5, 5", -1, split=1)]) + "\n")
    info = read_deeplesion_info(path)
    assert set(info) == {"000001_01_01", "000002_02_01"}
    first, second = info["000001_01_01"]
    assert first.key_slice == 109 and first.lesion_type == "liver"
    assert first.box == (226.1, 90.3, 300.0, 150.2)
    assert first.spacing == (5.0, 0.7, 0.7) and first.slice_range == (107, 111) and first.split == 3
    assert second.lesion_type == "lung" and second.noisy
    assert first.patient == "000001" and info["000002_02_01"][0].patient == "000002"  # Patient_index
    assert info["000002_02_01"][0].lesion_type is None  # -1: type unknown (training split)
    assert "Patient_age" not in repr(first) and "60" not in repr(first.__dict__.get("split"))
    boxes = deeplesion_boxes(info["000001_01_01"], [107, 108, 109, 110, 111, 112])
    assert [(b.slice_index, b.label) for b in boxes] == [(2, "liver"), (5, "lung")]
    assert deeplesion_boxes(info["000001_01_01"], [1, 2]) == []
    assert LESION_TYPES[3] == "liver" and LESION_TYPES[4] == "lung" and len(LESION_TYPES) == 8


def test_deeplesion_errors_name_file_and_line(tmp_path):
    path = tmp_path / "DL_info.csv"
    path.write_text(HEADER + "\n" + _row("000001_01_01_109.png", 109, "1, 2, 3", 4) + "\n")
    with pytest.raises(DataError, match=r"DL_info\.csv: line 2: column 'Bounding_boxes'"):
        read_deeplesion_info(path)
    path.write_text(HEADER + "\n" + _row("000001_01_01_109.png", 109, "1, 2, 3, 4", 9) + "\n")
    with pytest.raises(DataError, match="Coarse_lesion_type 9"):
        read_deeplesion_info(path)
    path.write_text("File_name,Key_slice_index\nx.png,1\n")
    with pytest.raises(DataError, match="missing DeepLesion column"):
        read_deeplesion_info(path)


def test_boxes_from_mask_components_per_slice():
    mask = np.zeros((3, 10, 12), np.uint8)
    mask[0, 1:3, 1:4] = 1  # component A on slice 0
    mask[0, 6:9, 8:12] = 2  # component B on slice 0 (any non-zero label)
    mask[0, 5, 5] = 1  # a single pixel
    mask[2, 4:6, 4:7] = 1
    mask[2, 6, 7] = 1  # touches diagonally: same 8-connected component
    boxes = boxes_from_mask(mask, label="lung", min_pixels=2)
    found = sorted((b.slice_index, b.x0, b.y0, b.x1, b.y1) for b in boxes)
    assert found == [(0, 1, 1, 4, 3), (0, 8, 6, 12, 9), (2, 4, 4, 8, 7)]
    assert all(b.label == "lung" for b in boxes)
    assert len(boxes_from_mask(mask)) == 4


def test_seed_lesion_csv(tmp_path):
    path = tmp_path / "lesions.csv"
    path.write_text("image,lesion_present,patient_id\np1/s_1.png,0,p1\np1/s_2.png,1,p1\ns_3.png,1,p2\n")
    flags = read_seed_lesion_csv(path, known_patients=["p1", "p2"])
    assert flags == {"p1": {"s_1.png": False, "s_2.png": True}, "p2": {"s_3.png": True}}
    boxes = seed_lesion_boxes(flags["p1"], ["s_1.png", "s_2.png"], (64, 48))
    assert [(b.slice_index, b.x1, b.y1) for b in boxes] == [(1, 48.0, 64.0)]
    with pytest.raises(DataError, match=r"lesions\.csv: patient_id\(s\) without a scan folder: p2"):
        read_seed_lesion_csv(path, known_patients=["p1"])
    path.write_text("image,lesion_present,patient_id\ns.png,maybe,p1\n")
    with pytest.raises(DataError, match="line 2"):
        read_seed_lesion_csv(path)
