"""Patients end to end: every source and task that can know whose scan it is fills ``patient_of``, and the
patient-level folds of ``make_splits`` then keep a patient's scans in one test fold."""

import logging
import re
from collections import defaultdict
from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
import pytest
from PIL import Image

from clear_bench.components import load_task
from clear_bench.errors import DataError
from clear_bench.evaluation.splits import make_splits, save_splits
from clear_bench.registry import load_registry
from clear_bench.specs import PatientSource

PSEUDONYM = re.compile(r"^pt-[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def registry():
    return load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)


def _folds_keep_patients(data, spec, k: int = 3) -> dict[str, int]:
    """Split as the core does and check that each patient's scans share one test fold; returns the test
    fold of each patient."""
    assert data.patient_of is not None and set(data.patient_of) == set(data.labels)
    splits = make_splits(data.labels, spec.label_type, k=k, seed=0, patient_of=data.patient_of)
    fold_of_scan = {scan_id: fold.index for fold in splits.folds for scan_id in fold.test}
    assert sorted(fold_of_scan) == sorted(data.labels)
    folds_of_patient = defaultdict(set)
    for scan_id, patient in data.patient_of.items():
        folds_of_patient[patient].add(fold_of_scan[scan_id])
    assert all(len(folds) == 1 for folds in folds_of_patient.values()), dict(folds_of_patient)
    for fold in splits.folds:  # nor does a test patient train or early-stop in its own fold
        test_patients = {data.patient_of[s] for s in fold.test}
        assert not test_patients & {data.patient_of[s] for s in [*fold.train, *fold.val]}
    return {patient: folds.pop() for patient, folds in folds_of_patient.items()}


def _groups(patient_of) -> list[list[str]]:
    by_patient = defaultdict(list)
    for scan_id, patient in patient_of.items():
        by_patient[patient].append(scan_id)
    return sorted(sorted(scans) for scans in by_patient.values())


def _ct(value: float, shape=(3, 12, 12)) -> np.ndarray:
    hu = np.full(shape, -1000.0)
    hu[:, 3:9, 3:9] = value
    return hu


# --- DeepLesion: <patient>_<study>_<series> ---------------------------------------------------------------

DL_HEADER = ("File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
             "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,"
             "Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,"
             "Train_Val_Test")


def test_deeplesion_series_of_one_patient_share_a_fold(registry, tmp_path):
    root = tmp_path / "DeepLesion"
    rows = [DL_HEADER]
    for patient in range(1, 7):
        for study, series in ((1, 1), (2, 1), (2, 3)):  # three series in two studies per patient
            name = f"{patient:06d}_{study:02d}_{series:02d}"
            folder = root / "Images_png" / name
            folder.mkdir(parents=True)
            for number in (1, 2):
                Image.fromarray(np.full((8, 8), 32768 - 1000, np.uint16)).save(folder / f"{number:03d}.png")
            kind = 1 + (patient + study + series) % 8
            rows.append(f'{name}_002.png,{patient},{study},{series},2,"1,2,3,4","1, 1, 4, 4","2, 2",'
                        f'"0.1,0.1,0.1",{kind},0,"1, 2","0.7, 0.7, 5","8, 8","-175, 275",F,40,1')
    (root / "DL_info.csv").write_text("\n".join(rows) + "\n")
    spec = registry.task("lesion-location")
    data = load_task(registry, spec, {"source": {"name": "deeplesion", "root": str(root)}})
    assert isinstance(data.source, PatientSource) and len(data.labels) == 18
    assert _groups(data.patient_of) == [[f"{p:06d}_01_01", f"{p:06d}_02_01", f"{p:06d}_02_03"]
                                        for p in range(1, 7)]
    assert all(PSEUDONYM.match(p) for p in data.patient_of.values())
    _folds_keep_patients(data, spec)
    salted = load_task(registry, spec, {"source": {"name": "deeplesion", "root": str(root),
                                                   "patient_salt": "a secret of the site"}})
    assert _groups(salted.patient_of) == _groups(data.patient_of)
    assert set(salted.patient_of.values()).isdisjoint(data.patient_of.values())


# --- a CT-RATE-style CSV: VolumeName train_<patient>_<scan>_<reconstruction> -----------------------------


def test_ct_rate_volume_names_give_the_patient(registry, tmp_path, volume_writer):
    root = tmp_path / "ct_rate"
    names = [f"train_{p}_{scan}_{recon}" for p in range(1, 7)
             for scan, recon in (("a", 1), ("a", 2), ("b", 1))]
    names.append("valid_1_a_1")  # the validation split's patient 1 is another patient
    for index, name in enumerate(names):
        volume_writer(root / f"{name}.nii.gz", _ct(index))
    table = tmp_path / "train_predicted_labels.csv"
    lines = ["VolumeName,Emphysema,Lung nodule,Consolidation,Pleural effusion,Arterial wall calcification"]
    lines += [f"{name}.nii.gz,{i % 2},{(i // 2) % 2},{int(i % 3 == 0)},{int(i % 4 == 1)},0"
              for i, name in enumerate(names)]
    table.write_text("\n".join(lines) + "\n")
    spec = registry.task("lung-disease")
    data = load_task(registry, spec, {"source": {"name": "folder", "root": str(root)},
                                      "labels_csv": str(table)})
    assert data.label_names == ["Emphysema", "Lung nodule", "Consolidation", "Pleural effusion"]
    assert data.patient_of["train_3_a_2"] == data.patient_of["train_3_b_1"] == "train_3"
    assert data.patient_of["valid_1_a_1"] == "valid_1" != data.patient_of["train_1_a_1"]
    assert len(_groups(data.patient_of)) == 7
    _folds_keep_patients(data, spec)


# --- a clinical CSV with a patient column -------------------------------------------------------------------


@pytest.fixture
def nifti_folder(tmp_path, volume_writer):
    root = tmp_path / "nifti"
    for k in range(12):
        volume_writer(root / f"scan{k:02d}.nii.gz", _ct(k))
    return root


def test_csv_patient_column(registry, nifti_folder, tmp_path):
    source = {"name": "folder", "root": str(nifti_folder)}
    table = tmp_path / "clinical.csv"
    table.write_text("image,patient_id,response,toxicity\n" + "".join(
        f"scan{k:02d}.nii.gz,P{k // 2:02d},{k % 2},{(k // 4) % 2}\n" for k in range(12)))
    spec = registry.task("csv")
    data = load_task(registry, spec, {"source": source, "csv": str(table)})
    assert data.label_names == ["response", "toxicity"]  # the patient column is no label
    assert data.patient_of["scan04"] == data.patient_of["scan05"] == "P02"  # used as given
    assert _groups(data.patient_of) == [[f"scan{2 * p:02d}", f"scan{2 * p + 1:02d}"] for p in range(6)]
    _folds_keep_patients(data, spec)

    # any column name; a scan with an empty cell has no patient and is left out of patient_of
    stages = ("I", "II", "III", "IV")
    table.write_text("image,subject,stage\n" + "".join(
        f"scan{k:02d},{'' if k == 11 else f'S{k // 3}'},{stages[k % 4]}\n" for k in range(12)))
    multi = registry.task("csv-multiclass")
    data = load_task(registry, multi, {"source": source, "csv": str(table), "label_column": "stage",
                                       "patient_column": "subject"})
    assert len(data.labels) == 12 and sorted(data.patient_of) == [f"scan{k:02d}" for k in range(11)]
    staging = registry.task("staging")
    staged = load_task(registry, staging, {"source": source, "labels_csv": str(table),
                                           "patient_column": "subject"})
    assert staged.patient_of == data.patient_of
    complete = {k: v for k, v in data.labels.items() if k in data.patient_of}
    data.labels = complete
    _folds_keep_patients(data, multi)
    with pytest.raises(DataError, match=r"clinical\.csv: missing column\(s\) patient"):
        load_task(registry, staging, {"source": source, "labels_csv": str(table),
                                      "patient_column": "patient"})
    # without a patient column, NIfTI files have no patient
    table.write_text("image,y\n" + "".join(f"scan{k:02d},{k % 2}\n" for k in range(12)))
    assert load_task(registry, spec, {"source": source, "csv": str(table)}).patient_of is None


# --- the CLEAR seed layout: one folder per patient ----------------------------------------------------------


def test_seed_layout_patient_is_the_folder(registry, tmp_path):
    root = tmp_path / "seed"
    for p in range(6):
        (root / f"patient_{p}").mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(root / f"patient_{p}" / f"{k}.png")
    lesions = tmp_path / "lesions.csv"
    lesions.write_text("image,lesion_present,patient_id\n"
                       + "".join(f"1.png,1,patient_{p}\n" for p in range(6)))
    table = tmp_path / "outcome.csv"
    table.write_text("image,relapse\n" + "".join(f"patient_{p},{p % 2}\n" for p in range(6)))
    spec = registry.task("csv")
    data = load_task(registry, spec, {"source": {"name": "seed-png", "root": str(root),
                                                 "lesions_csv": str(lesions)}, "csv": str(table)})
    assert data.patient_of == {f"patient_{p}": f"patient_{p}" for p in range(6)}
    _folds_keep_patients(data, spec)
    with pytest.raises(DataError, match="no patient folder 'ghost'"):
        data.source.patient_id("ghost")


# --- DICOM folders: the PatientID, salted and hashed --------------------------------------------------------


@pytest.fixture
def dicom_folder(tmp_path, dicom_series_writer):
    """Six patients with two series each (one patient's two series share one folder), plus one series
    whose PatientID an anonymiser replaced."""
    root = tmp_path / "dicom"
    for p in range(6):
        for s in range(2):
            folder = root / (f"case{p}" if p == 5 else f"case{p}_{s}")
            dicom_series_writer(folder, _ct(10 * p + s), f"1.2.826.0.77.{p}.{s}", prefix=f"s{s}_",
                                patient_id=f"MRN-00{p}42", birth_date="19700101")
    dicom_series_writer(root / "anonymous", _ct(99), "1.2.826.0.77.9.9", patient_id="ANONYMOUS")
    return root


def test_dicom_patients_are_pseudonymous(registry, dicom_folder, tmp_path, caplog):
    table = tmp_path / "labels.csv"
    ids = [f"case{p}_{s}" for p in range(5) for s in range(2)] + ["case5-s1", "case5-s2", "anonymous"]
    table.write_text("image,response\n" + "".join(f"{scan_id},{k % 2}\n" for k, scan_id in enumerate(ids)))
    spec = registry.task("csv")
    source = {"name": "folder", "root": str(dicom_folder), "series": "all"}
    with caplog.at_level(logging.DEBUG):
        data = load_task(registry, spec, {"source": source, "csv": str(table)})
    assert isinstance(data.source, PatientSource) and len(data.labels) == 13
    assert "anonymous" not in data.patient_of and data.source.patient_id("anonymous") is None
    assert _groups(data.patient_of) == sorted([[f"case{p}_0", f"case{p}_1"] for p in range(5)]
                                              + [["case5-s1", "case5-s2"]])
    for patient in data.patient_of.values():  # neither equal to nor containing the raw PatientID
        assert PSEUDONYM.match(patient) and "MRN" not in patient
        assert all(raw not in patient for raw in (f"MRN-00{p}42" for p in range(6)))
    complete = {k: v for k, v in data.labels.items() if k in data.patient_of}
    data.labels = complete
    _folds_keep_patients(data, spec)
    written = save_splits(make_splits(complete, spec.label_type, k=3, seed=0, patient_of=data.patient_of),
                          tmp_path / "splits.json").read_text()
    scan = data.source.load("case0_0")
    kept = written + caplog.text + repr(vars(data.source)) + repr({k: v for k, v in vars(scan).items()
                                                                   if k != "volume"})
    assert not re.search(r"MRN|0042|Roe|Richard|19700101", kept)
    fingerprint = data.source.fingerprint("case0_0")

    salted = load_task(registry, spec, {"source": {**source, "patient_salt": "a secret of the site"},
                                        "csv": str(table)})
    assert _groups(salted.patient_of) == _groups(data.patient_of)
    assert set(salted.patient_of.values()).isdisjoint(data.patient_of.values())
    assert salted.source.fingerprint("case0_0") == fingerprint  # the salt changes no cache entry


def test_a_raw_patient_id_in_the_csv_is_refused(registry, dicom_folder, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("image,patient_id,response\ncase0_0,P0,1\ncase0_1,MRN-00042,0\ncase1_0,P1,0\n")
    source = {"name": "folder", "root": str(dicom_folder)}
    with pytest.raises(DataError, match=r"labels\.csv: line 3: column 'patient_id' holds the DICOM "
                                        r"PatientID of scan 'case0_1'") as error:
        load_task(registry, registry.task("csv"), {"source": source, "csv": str(table)})
    assert "MRN" not in str(error.value)
    table.write_text("image,patient_id,response\ncase0_0,P0,1\ncase0_1,P0,0\ncase1_0,P1,0\n")
    data = load_task(registry, registry.task("csv"), {"source": source, "csv": str(table)})
    assert data.patient_of == {"case0_0": "P0", "case0_1": "P0", "case1_0": "P1"}  # the column wins


# --- the synthetic cohort and the sample CTs: one scan per patient ------------------------------------------


def test_synthetic_source_states_one_scan_per_patient(registry):
    options = {"patients": 6, "slices": 8, "matrix": 48, "cache": False}
    source = registry.source("synthetic").build(options)
    assert isinstance(source, PatientSource)
    assert [source.patient_id(s) for s in source.scan_ids()] == source.scan_ids()
    assert "patient_id(scan_id) == scan_id" in type(source).__doc__
    spec = registry.task("staging")
    data = load_task(registry, spec, {"source": {"name": "synthetic", **options}})
    assert data.patient_of == {s: s for s in data.labels}
    with pytest.raises(DataError, match="has no scan 'nope'"):
        source.patient_id("nope")


def test_each_sample_ct_is_its_own_patient(registry, monkeypatch, tmp_path):
    import clear_bench.data.samples as samples

    monkeypatch.setattr(samples, "missing_samples", lambda *args, **kwargs: [])  # nothing is read here
    source = registry.source("samples").build({"download": False, "dest": str(tmp_path)})
    assert isinstance(source, PatientSource)
    assert [source.patient_id(s) for s in source.scan_ids()] == source.scan_ids()
