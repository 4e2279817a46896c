"""The folder, seed-png and DeepLesion sources and the CSV-driven tasks, on files the tests write."""

from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
import pytest
from PIL import Image

from clear_bench.components import load_task
from clear_bench.data.readers import load_all
from clear_bench.errors import ConfigError, DataError
from clear_bench.registry import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)


def _ct(value: float, shape=(4, 16, 16)) -> np.ndarray:
    hu = np.full(shape, -1000.0)
    hu[:, 4:12, 4:12] = value
    return hu


@pytest.fixture
def ct_folder(tmp_path, volume_writer, dicom_series_writer):
    root = tmp_path / "ct"
    volume_writer(root / "pat_a.nii.gz", _ct(10))
    volume_writer(root / "pat_b.nrrd", _ct(20))
    volume_writer(root / "pat_c.mha", _ct(30))
    dicom_series_writer(root / "pat_d", _ct(40), "1.2.3.4.1")
    dicom_series_writer(root / "pat_e", _ct(50), "1.2.3.5.1", prefix="x")
    dicom_series_writer(root / "pat_e", _ct(60, (3, 16, 16)), "1.2.3.5.2", prefix="y")
    mask = np.zeros((4, 16, 16))
    mask[1, 5:8, 6:10] = 1
    volume_writer(root / "masks" / "pat_a_mask.nii.gz", mask)
    return root


def test_folder_source_reads_every_format(registry, ct_folder):
    source = registry.source("folder").build({"root": str(ct_folder), "masks": str(ct_folder / "masks"),
                                              "mask_label": "lung", "series": "all"})
    assert source.scan_ids() == ["pat_a", "pat_b", "pat_c", "pat_d", "pat_e-s1", "pat_e-s2"]
    values = {scan_id: float(source.load(scan_id).volume[0, 8, 8]) for scan_id in source.scan_ids()}
    assert values == {"pat_a": 10, "pat_b": 20, "pat_c": 30, "pat_d": 40, "pat_e-s1": 50, "pat_e-s2": 60}
    scan = source.load("pat_a")
    boxes = [(b.slice_index, b.x0, b.y0, b.x1, b.y1, b.label) for b in scan.lesions]
    assert boxes == [(1, 6, 5, 10, 8, "lung")]
    assert scan.spacing == pytest.approx((3.0, 1.0, 1.0))
    assert source.load("pat_d").scan_id == "pat_d" and source.load("pat_d").spacing[0] == pytest.approx(3.0)
    before = source.fingerprint("pat_b")
    assert before == source.fingerprint("pat_b") and before != source.fingerprint("pat_c")
    (ct_folder / "pat_b.nrrd").write_bytes((ct_folder / "pat_c.mha").read_bytes()[:10])
    assert source.fingerprint("pat_b") != before  # content changed
    scans, failures = load_all(source)
    assert len(scans) == 5 and [f.scan_id for f in failures] == ["pat_b"]
    assert "pat_b.nrrd" in failures[0].error


def test_folder_source_errors(registry, tmp_path):
    with pytest.raises(DataError, match="no CT scans"):
        registry.source("folder").build({"root": str(tmp_path)})
    with pytest.raises(DataError, match="folder not found"):
        registry.source("folder").build({"root": str(tmp_path / "nope")})
    (tmp_path / "x.csv").write_text("image,y\n")
    with pytest.raises(ConfigError, match="source 'folder': root: required option is missing"):
        load_task(registry, registry.task("csv"),
                  {"source": {"name": "folder"}, "csv": str(tmp_path / "x.csv")})


def test_csv_tasks_join_labels_to_scans(registry, ct_folder):
    source = {"name": "folder", "root": str(ct_folder)}
    table = ct_folder.parent / "clinical.csv"
    table.write_text("image,patient_id,response,toxicity\npat_a.nii.gz,1,1,0\npat_b,2,0,1\npat_c,3,yes,no\n"
                     "pat_d,4,,1\n")
    data = load_task(registry, registry.task("csv"), {"source": source, "csv": str(table)})
    assert data.label_names == ["response", "toxicity"]
    got = {k: v.tolist() for k, v in data.labels.items()}
    assert got == {"pat_a": [1, 0], "pat_b": [0, 1], "pat_c": [1, 0]}
    table.write_text("image,stage\npat_a,Stage IIIA\npat_b,1\npat_c,IV\npat_d,II\n")
    staging = load_task(registry, registry.task("staging"), {"source": source, "labels_csv": str(table)})
    stages = {k: int(v[0]) for k, v in staging.labels.items()}
    assert stages == {"pat_a": 2, "pat_b": 0, "pat_c": 3, "pat_d": 1}
    multi = load_task(registry, registry.task("csv-multiclass"), {"source": source, "csv": str(table),
                                                  "label_column": "stage",
                                                  "classes": ["1", "II", "IV", "Stage IIIA"]})
    assert multi.label_names == ["1", "II", "IV", "Stage IIIA"] and int(multi.labels["pat_a"][0]) == 3
    ct_rate = ct_folder.parent / "ct_rate.csv"
    ct_rate.write_text("VolumeName,Emphysema,Lung nodule,Consolidation,Pleural effusion,Cardiomegaly\n"
                       "pat_a.nii.gz,1,0,0,1,1\npat_c.nii.gz,0,1,1,0,0\n")
    lung = load_task(registry, registry.task("lung-disease"), {"source": source, "labels_csv": str(ct_rate)})
    assert lung.label_names == ["Emphysema", "Lung nodule", "Consolidation", "Pleural effusion"]
    assert lung.labels["pat_a"].tolist() == [1, 0, 0, 1]


def test_csv_with_an_unknown_patient_names_the_file(registry, ct_folder):
    source = {"name": "folder", "root": str(ct_folder)}
    table = ct_folder.parent / "labels.csv"
    table.write_text("image,label\npat_a,1\nghost_patient,0\npat_b,0\n")
    with pytest.raises(DataError, match=r"labels\.csv: 1 patient\(s\) .* ghost_patient"):
        load_task(registry, registry.task("csv"), {"source": source, "csv": str(table)})
    data = load_task(registry, registry.task("csv"), {"source": source, "csv": str(table), "missing": "skip"})
    assert sorted(data.labels) == ["pat_a", "pat_b"]
    table.write_text("image,label\npat_a,maybe\n")
    with pytest.raises(DataError, match="line 2: column 'label'"):
        load_task(registry, registry.task("csv"), {"source": source, "csv": str(table)})
    with pytest.raises(ConfigError, match=r"task 'csv': csv: file not found: .*none\.csv"):
        load_task(registry, registry.task("csv"), {"source": source, "csv": str(table.with_name("none.csv"))})


def test_seed_png_source(registry, tmp_path):
    root = tmp_path / "seed"
    rng = np.random.default_rng(0)
    for patient, n in (("p1", 5), ("p2", 3)):
        (root / patient).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / patient / f"{k}.png")
    (root / "p3_empty").mkdir()
    lesions = tmp_path / "lesions.csv"
    lesions.write_text("image,lesion_present,patient_id\n1.png,1,p1\n2.png,0,p1\n0.png,1,p2\n")
    source = registry.source("seed-png").build({"root": str(root), "lesions_csv": str(lesions),
                                                "spacing": [5, 0.8, 0.8]})
    assert source.scan_ids() == ["p1", "p2", "p3_empty"]
    scan = source.load("p1")
    assert scan.prewindowed and scan.volume.shape == (5, 12, 12) and scan.spacing == (5.0, 0.8, 0.8)
    assert [b.slice_index for b in scan.lesions] == [1]
    scans, failures = load_all(source)
    assert [s.scan_id for s in scans] == ["p1", "p2"]
    assert failures[0].scan_id == "p3_empty" and "p3_empty: no PNG slices" in failures[0].error
    lesions.write_text("image,lesion_present,patient_id\n1.png,1,p9\n")
    with pytest.raises(DataError, match=r"lesions\.csv: patient_id\(s\) without a scan folder: p9"):
        registry.source("seed-png").build({"root": str(root), "lesions_csv": str(lesions)})


def test_deeplesion_source(registry, tmp_path):
    root = tmp_path / "DeepLesion"
    series = root / "Images_png" / "000001_01_01"
    series.mkdir(parents=True)
    for number in (108, 109, 110):
        hu = np.full((20, 20), -1000, np.int32)
        hu[5:10, 5:10] = number  # the slice number as HU, to check order and offset
        Image.fromarray((hu + 32768).astype(np.uint16)).save(series / f"{number:03d}.png")
    header = ("File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
              "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,"
              "Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,"
              "Train_Val_Test")
    rows = ['000001_01_01_109.png,1,1,1,109,"1,2,3,4","4.5, 5.0, 10.2, 9.8","5, 4","0.1,0.1,0.1",4,0,'
            '"108, 110","0.7, 0.7, 5","20, 20","-175, 275",M,51,3',
            '000001_01_01_110.png,1,1,1,110,"1,2,3,4","1, 1, 3, 3","2, 2","0.1,0.1,0.1",1,0,'
            '"108, 110","0.7, 0.7, 5","20, 20","-175, 275",M,51,3',
            '000009_01_01_010.png,9,1,1,10,"1,2,3,4","1, 1, 3, 3","2, 2","0.1,0.1,0.1",2,0,'
            '"8, 12","0.7, 0.7, 5","20, 20","-175, 275",F,40,2']
    (root / "DL_info.csv").write_text("\n".join([header, *rows]) + "\n")
    source = registry.source("deeplesion").build({"root": str(root)})
    assert source.scan_ids() == ["000001_01_01"]  # series 000009 is not on disk
    scan = source.load("000001_01_01")
    assert scan.volume[:, 7, 7].tolist() == [108, 109, 110] and scan.volume[0, 0, 0] == -1000
    assert scan.spacing == (5.0, 0.7, 0.7)
    assert [(b.slice_index, b.label) for b in scan.lesions] == [(1, "liver"), (2, "bone")]
    deeplesion = {"name": "deeplesion", "root": str(root)}
    task = load_task(registry, registry.task("lesion-location"), {"source": deeplesion})
    assert task.labels["000001_01_01"].tolist() == [1, 0, 0, 1, 0, 0, 0, 0]
    no_labels = "task 'lung-disease': source 'deeplesion' carries no lung-disease labels; give labels_csv"
    with pytest.raises(ConfigError, match=no_labels):
        load_task(registry, registry.task("lung-disease"), {"source": deeplesion})
