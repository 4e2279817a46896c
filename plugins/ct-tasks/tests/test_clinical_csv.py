"""The clinical CSV, read with pandas as text: published column names, missing-value markers, and errors
that name the file, the line and the column."""

from __future__ import annotations

import pytest
from clear_bench_ct_tasks import csvlabels

from clear_bench.errors import DataError

IDS = ["LUNG1-001", "LUNG1-002", "LUNG1-003", "NA", "007"]


def test_published_columns_stages_and_missing_values(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text("\ufeffPatientID,age,clinical.T.Stage,Clinical.N.Stage,Overall.Stage,Histology,"
                    "deadstatus.event\n"
                    "LUNG1-001,78.75,2,3,IIIb,large cell,1\n"
                    "\n"  # a blank line does not shift the line numbers below
                    "LUNG1-002,83.8,2,0,NA,\"squamous cell carcinoma\",0\n"
                    "007,68.2,2,3,I,nos,N/A\n"
                    "NA,70.9,2,1,II,adenocarcinoma,1\n")
    header, rows = csvlabels.read_csv(path)
    assert header[:3] == ["PatientID", "age", "clinical.T.Stage"]  # dots are not the delimiter
    assert [r.line for r in rows] == [2, 4, 5, 6]
    assert rows[2]["PatientID"] == "007" and rows[1]["Histology"] == "squamous cell carcinoma"
    _names, stages = csvlabels.class_labels(path, "PatientID", "Overall.Stage", IDS,
                                           classes=["I", "II", "IIIa", "IIIb"])
    # NA is a missing stage, but 'NA' and '007' are ids as written
    assert {k: int(v[0]) for k, v in stages.items()} == {"LUNG1-001": 3, "007": 0, "NA": 1}
    events = csvlabels.binary_labels(path, "PatientID", ["deadstatus.event"], IDS)
    assert {k: int(v[0]) for k, v in events.items()} == {"LUNG1-001": 1, "LUNG1-002": 0, "NA": 1}
    staged = csvlabels.class_labels(path, "PatientID", "Overall.Stage", IDS, parse="stage")[1]
    assert int(staged["LUNG1-001"][0]) == 2  # IIIb is stage III


def test_semicolons_and_tabs(tmp_path):
    for delimiter in (";", "\t"):
        path = tmp_path / "labels.csv"
        path.write_text(delimiter.join(["image", "y"]) + "\n" + delimiter.join(["LUNG1-001", "1"]) + "\n")
        assert csvlabels.binary_labels(path, "image", ["y"], IDS)["LUNG1-001"].tolist() == [1.0]


@pytest.mark.parametrize(("text", "message"), [
    ("image,y\nLUNG1-001,1\nLUNG1-002,maybe\n", r"labels\.csv: line 3: column 'y' has 'maybe'"),
    ("image,y\nLUNG1-001,1\n\nLUNG1-001,0\n", r"labels\.csv: line 4: 'LUNG1-001' also on line 2 \(image\)"),
    ("image,y\nLUNG1-001,1\n,0\n", r"labels\.csv: line 3: empty 'image'"),
    ("image,y,y\nLUNG1-001,1,0\n", r"labels\.csv: line 1: column\(s\) y appear more than once"),
    ("image,y\nLUNG1-001,1\nLUNG1-002,0,5,6\n", r"labels\.csv: cannot parse label CSV \(.*line 3"),
    ("image,y\nLUNG1-001,1\nghost,0\n",
     r"labels\.csv: 1 patient\(s\) in column 'image' have no scan .*ghost"),
    ("image,x\nLUNG1-001,1\n", r"labels\.csv: missing column\(s\) y \(columns: image, x\)"),
])
def test_errors_name_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        csvlabels.binary_labels(path, "image", ["y"], IDS)


def test_the_ct_rate_layout_joins_its_multi_abnormality_csv(tmp_path):
    """CT-RATE as documented: dataset/train/<patient>/<scan>/<volume>.nii.gz, ids the volume names."""
    from pathlib import Path

    import clear_bench_ct_tasks.plugin
    import nibabel as nib
    import numpy as np

    from clear_bench.components import load_task
    from clear_bench.registry import load_registry

    root = tmp_path / "dataset" / "train"
    names = ["train_1_a_1", "train_1_a_2", "train_2_a_1", "train_3_b_1"]
    for name in names:
        patient, scan = "_".join(name.split("_")[:2]), "_".join(name.split("_")[:3])
        folder = root / patient / scan
        folder.mkdir(parents=True, exist_ok=True)
        hu = np.full((3, 8, 8), -1000, np.int16)
        nib.save(nib.Nifti1Image(hu, np.diag([-1.0, -1.0, 2.0, 1.0])), str(folder / f"{name}.nii.gz"))
    labels = tmp_path / "train_predicted_labels.csv"
    labels.write_text("VolumeName,Medical material,Emphysema,Lung nodule,Consolidation,Pleural effusion\n"
                      + "".join(f"{n}.nii.gz,0,{k % 2},1,0,{(k + 1) % 2}\n" for k, n in enumerate(names)))
    registry = load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)
    source = {"name": "folder", "root": str(root), "recursive": True, "ids": "name"}
    data = load_task(registry, registry.task("lung-disease"), {"source": source, "labels_csv": str(labels)})
    assert sorted(data.labels) == names
    assert data.label_names == ["Emphysema", "Lung nodule", "Consolidation", "Pleural effusion"]
    assert data.patient_of == {"train_1_a_1": "train_1", "train_1_a_2": "train_1", "train_2_a_1": "train_2",
                               "train_3_b_1": "train_3"}

