"""No patient-identifying DICOM field reaches anything a run writes: identifying values are planted in
every file of real DICOM series, and every file of the output, cache and board folders (HDF5 entries,
JSON, CSV, Markdown, PNG plots, as bytes) and the run's console output are searched for them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pydicom


def _write_dicom_series():
    """The DICOM writer of the reader tests (a conftest module, loaded by path: it cannot be imported)."""
    spec = importlib.util.spec_from_file_location("reader_test_writers",
                                                  Path(__file__).parents[1] / "data" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_dicom_series


def _identifying(k: int) -> dict[str, str]:
    """Patient ``k``'s identifying fields, each value a string found nowhere else."""
    return {"PatientName": f"Qzorbat{k}^Wilhelmina", "PatientID": f"MRN-77{k}31-PHI",
            "PatientBirthDate": f"19{40 + k}0229", "InstitutionName": f"Saint Xyloph{k} Infirmary",
            "AccessionNumber": f"ACC88{k}412", "ReferringPhysicianName": f"Dr^Vexmoor{k}",
            "OtherPatientIDs": f"OPID-55{k}90", "PatientAddress": f"{k} Quillon Lane, Brackwater",
            "StudyID": f"STU9{k}93", "OperatorsName": f"Tech^Plonsky{k}"}


def test_identifying_dicom_fields_appear_in_no_output(kit, tmp_path: Path) -> None:
    write = _write_dicom_series()
    scans, planted, labels = tmp_path / "scans", set(), {}
    for k in range(8):
        folder = f"patient{k:02d}"  # folder names are the scan ids: a site names them, not the export
        fields = _identifying(k)
        hu = kit.ct_volume(k, 3, 16).astype(np.float32)
        paths = write(scans / folder, hu, patient_id=fields["PatientID"],
                      institution=fields["InstitutionName"])
        if k == 7:  # a second series in one folder: the board notes which was read
            paths += write(scans / folder, hu[:2], (5.0, 0.8, 0.7), prefix="b",
                           patient_id=fields["PatientID"], institution=fields["InstitutionName"])
        for path in paths:
            ds = pydicom.dcmread(path)
            for name, value in fields.items():
                setattr(ds, name, value)
            ds.save_as(path)
        labels[folder] = k % 2
        planted |= set(fields.values())
        planted |= {f"Qzorbat{k}", f"Vexmoor{k}", f"19{40 + k}-02-29"}  # parts, and the date as ISO
    broken = write(scans / "patient08", kit.ct_volume(8, 3, 16).astype(np.float32), without_pixels=1,
                   patient_id="MRN-BROKEN-PHI", institution="Saint Brokenward Infirmary")
    planted |= {"MRN-BROKEN-PHI", "Saint Brokenward Infirmary"}
    assert pydicom.dcmread(broken[0]).PatientID == "MRN-BROKEN-PHI"
    labels["patient08"] = 1
    kit.write_labels(tmp_path / "labels.csv", labels)
    bench = kit.bench_yaml(tmp_path, encoders="[{name: hu-reference, options: {image_size: 16}}, "
                                              "{name: image-probe, options: {image_size: 16}}]")
    result = kit.run_here("run", bench, "--no-progress")
    assert result.returncode == 0, result.stdout
    assert "patient08" in (tmp_path / "boards" / "finding.scans-left-out.csv").read_text()
    assert "## Scan notes" in (tmp_path / "boards" / "finding.md").read_text()

    written = [p for folder in ("run", "cache", "boards") for p in (tmp_path / folder).rglob("*")
               if p.is_file()]
    kinds = {p.suffix for p in written}
    assert {".h5", ".json", ".csv", ".md", ".png", ".npz"} <= kinds, kinds
    exported = b"".join(p.read_bytes().lower() for p in scans.rglob("*.dcm"))
    assert all(value.lower().encode() in exported for k in range(8) for value in _identifying(k).values())
    # patient08 keeps the writer's own name and birth date
    needles = sorted({value.lower().encode() for value in planted} | {b"doe^jane", b"19700101"})
    found = {str(p.relative_to(tmp_path)): [n for n in needles if n in p.read_bytes().lower()]
             for p in written}
    assert not {name: hits for name, hits in found.items() if hits}
    console = result.stdout.lower().encode()
    assert not [n for n in needles if n in console]
    # the scan ids and patients the run keeps are the folder names and salted hashes
    assert b"patient07" in (tmp_path / "boards" / "finding.scan-notes.csv").read_bytes()
