"""Pseudonymous patients: the salted hash, and the patient of a DICOM series (never its raw PatientID)."""

import logging
import re

from clear_bench.data.dicom import find_series
from clear_bench.data.patients import (
    DEFAULT_PATIENT_SALT,
    SALT_ENV,
    dicom_patient,
    dicom_site,
    patient_salt,
    pseudonymous_patient,
)

PSEUDONYM = re.compile(r"^pt-[0-9a-f]{16}$")


def test_pseudonym_is_a_salted_hash(monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    assert patient_salt() == DEFAULT_PATIENT_SALT and patient_salt("mine") == "mine"
    first = pseudonymous_patient("MRN-0042")
    assert PSEUDONYM.match(first) and "0042" not in first and "MRN" not in first
    assert first == pseudonymous_patient(" MRN-0042 ")
    assert first == pseudonymous_patient("MRN-0042", DEFAULT_PATIENT_SALT)
    assert pseudonymous_patient("MRN-0043") != first
    salted = pseudonymous_patient("MRN-0042", "a secret of the site")
    assert PSEUDONYM.match(salted) and salted != first
    monkeypatch.setenv(SALT_ENV, "a secret of the site")
    assert pseudonymous_patient("MRN-0042") == salted  # the environment keeps the salt out of the YAML
    assert pseudonymous_patient("MRN-0042", "given wins") not in (first, salted)
    assert pseudonymous_patient("") is None and pseudonymous_patient(None) is None


def test_placeholder_patient_ids_are_unknown():
    for placeholder in ("", "ANONYMOUS", "Anonymized", "unknown", "0", " N/A "):
        assert dicom_patient(placeholder) is None, placeholder
    assert dicom_patient("MRN-0042") == pseudonymous_patient("MRN-0042")


def test_dicom_series_patient_is_hashed_at_once(tmp_path, truth, dicom_writer, caplog):
    folder = tmp_path / "mixed"
    dicom_writer(folder, truth, series_uid="1.2.826.0.9.1", prefix="a")
    dicom_writer(folder, truth[:3], series_uid="1.2.826.0.9.2", prefix="b")  # same patient, MRN-0042
    dicom_writer(folder, truth[:2], series_uid="1.2.826.0.9.3", prefix="c", patient_id="MRN-0077")
    dicom_writer(folder, truth[:2], series_uid="1.2.826.0.9.4", prefix="d", patient_id="ANONYMOUS")
    dicom_writer(folder, truth[:2], series_uid="1.2.826.0.9.5", prefix="e", patient_id=None)
    dicom_writer(folder, truth[:2], series_uid="1.2.826.0.9.6", prefix="f", patient_ids=["MRN-1", "MRN-2"])
    with caplog.at_level(logging.DEBUG):
        series = {s.uid: s for s in find_series(folder)}
    a, b, c = (series[f"1.2.826.0.9.{k}"].patient for k in (1, 2, 3))
    assert a == b == pseudonymous_patient("MRN-0042") and c == pseudonymous_patient("MRN-0077") != a
    assert all(PSEUDONYM.match(p) for p in (a, c))
    assert [series[f"1.2.826.0.9.{k}"].patient for k in (4, 5, 6)] == [None, None, None]
    assert "different PatientIDs" in caplog.text  # series 6: its files disagree
    kept = repr(list(series.values())) + caplog.text
    assert not re.search(r"MRN|0042|0077|Doe|19700101", kept)
    salted = {s.uid: s.patient for s in find_series(folder, patient_salt="a secret of the site")}
    assert salted["1.2.826.0.9.1"] == pseudonymous_patient("MRN-0042", "a secret of the site") != a



def test_dicom_series_site_is_a_salted_hash_of_institution_and_scanner(tmp_path, truth, dicom_writer):
    folder = tmp_path / "sites"
    dicom_writer(folder, truth[:2], series_uid="1.2.826.0.9.1", prefix="a")
    dicom_writer(folder, truth[:2], series_uid="1.2.826.0.9.2", prefix="b", patient_id="MRN-0077")
    dicom_writer(folder, truth[:2], series_uid="1.2.826.0.9.3", prefix="c", institution="St Elsewhere")
    series = {s.uid: s.site for s in find_series(folder)}
    a, b, c = (series[f"1.2.826.0.9.{k}"] for k in (1, 2, 3))
    assert a == b == dicom_site("General Hospital", "", "") != c
    assert all(re.fullmatch(r"site-[0-9a-f]{12}", s) for s in (a, c))
    assert dicom_site("General Hospital", "", "", salt="a secret of the site") != a
    assert dicom_site("", "", "") is None
