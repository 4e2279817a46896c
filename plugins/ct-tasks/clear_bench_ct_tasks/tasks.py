"""The clinical tasks: lesion location, lung disease, staging, and any endpoint of a clinical CSV.

Every task takes ``source`` (a name or ``{name: ..., options...}``; the synthetic cohort by default), which
the core builds from its registry: ``load(options)`` receives the built :class:`ScanSource`. Labels come
from the source itself when it carries them (a :class:`LabelledSource`: the synthetic cohort, DeepLesion's
lesion types), or from a ``labels_csv`` joined to the source's scan ids.

Patients (``TaskData.patient_of``, so that a patient's scans share a fold) come from one provider per task,
the first that applies: the label CSV's ``patient_column`` (default: ``patient_id`` when the CSV has it),
its values used as given; else CT-RATE volume names when every labelled scan has one (``train_123_a_1``:
patient ``train_123``); else the source's own patients when it is a
:class:`~clear_bench.specs.PatientSource`. Scans that provider gives no patient are left out of
``patient_of`` (the core then treats the task as scan-level); no provider at all gives ``None``. A patient
cell that is the scan's raw DICOM PatientID (a source offering ``reveals_patient(scan_id, value)``, such
as the ``folder`` source) is refused: patient ids are written to the split files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clear_bench.data.annotations import LESION_TYPES
from clear_bench.errors import ConfigError, DataError
from clear_bench.schema import describe
from clear_bench.specs import (
    LabelledSource,
    Option,
    PatientSource,
    ScanSource,
    TaskData,
    TaskSpec,
    resolve_options,
)
from clear_bench_ct_tasks import csvlabels
from clear_bench_ct_tasks.synthetic.plan import LUNG_DISEASES

CT_RATE_COLUMNS: dict[str, str] = {
    "emphysema": "Emphysema", "nodule": "Lung nodule", "consolidation": "Consolidation",
    "effusion": "Pleural effusion",
}

_SOURCE = Option((str, dict), "synthetic", "dataset source: a name, or {name: ..., <source options>}",
                 component="sources")
_ID = Option(str, "image", "CSV column holding the scan id (file name without extension)")
_MISSING = Option(str, "error", "a CSV id without a scan: error or skip", choices=("error", "skip"))
_PATIENT = Option(str, None, "CSV column of each scan's pseudonymous patient, used as given; a patient's "
                  "scans share a fold (default: patient_id when present, else CT-RATE volume names, else "
                  "the source's patients). Never a raw hospital identifier")


def _source(values: Mapping[str, Any], task: str) -> ScanSource:
    """The built source of a task's options (the core builds ``source`` before ``load`` is called)."""
    source = values.get("source")
    if source is None:
        raise ConfigError(f"task '{task}': option 'source' is required "
                          "(e.g. {name: folder, root: /data/ct})")
    if not isinstance(source, ScanSource):
        raise ConfigError(f"task '{task}': option 'source' is {describe(source)}, not a built scan source; "
                          "load the task through clear_bench.components.load_task")
    return source


def _source_labels(source: ScanSource, task: str) -> tuple[list[str], dict[str, np.ndarray]] | None:
    if not isinstance(source, LabelledSource):
        return None
    try:
        return source.task_labels(task)
    except KeyError:  # a labelled source without labels for this task
        return None


def _patients(source: ScanSource, labels: Mapping[str, np.ndarray], csv: str | Path | None = None,
              id_column: str = "image", patient_column: str | None = None) -> dict[str, str] | None:
    """The patient of each labelled scan, from the first provider that applies (see the module's doc)."""
    if csv is not None:
        header, _ = csvlabels.read_csv(csv)
        column = patient_column or ("patient_id" if "patient_id" in header else None)
        if column is not None:
            found = csvlabels.csv_patients(csv, id_column, column, labels,
                                           getattr(source, "reveals_patient", None))
            return found or None
        ct_rate = {scan_id: csvlabels.ct_rate_patient(scan_id) for scan_id in labels}
        if ct_rate and all(ct_rate.values()):
            return {scan_id: str(patient) for scan_id, patient in ct_rate.items()}
    if isinstance(source, PatientSource):
        found = {scan_id: source.patient_id(scan_id) for scan_id in labels}
        return {scan_id: str(patient) for scan_id, patient in found.items() if patient is not None} or None
    return None


def _from_source(source: ScanSource, found: tuple[list[str], dict[str, np.ndarray]]) -> TaskData:
    return TaskData(found[0], found[1], source, _patients(source, found[1]))


def _no_labels(task: str, source: ScanSource, hint: str) -> ConfigError:
    return ConfigError(f"task '{task}': source '{source.name}' carries no {hint} labels; give labels_csv")


def _load_lesion_location(options: Mapping[str, Any]) -> TaskData:
    values = resolve_options(LESION_LOCATION_OPTIONS, options)
    source = _source(values, "lesion-location")
    if values["labels_csv"]:
        columns = list(values["label_columns"] or LESION_TYPES)
        labels = csvlabels.binary_labels(values["labels_csv"], values["id_column"], columns,
                                         source.scan_ids(), values["missing"])
        return TaskData(columns, labels, source, _patients(source, labels, values["labels_csv"],
                                                           values["id_column"], values["patient_column"]))
    found = _source_labels(source, "lesion-location")
    if found is None:
        raise _no_labels("lesion-location", source, "lesion-type")
    return _from_source(source, found)


def _load_lung_disease(options: Mapping[str, Any]) -> TaskData:
    values = resolve_options(LUNG_DISEASE_OPTIONS, options)
    source = _source(values, "lung-disease")
    if values["labels_csv"]:
        path = Path(values["labels_csv"])
        header, _ = csvlabels.read_csv(path)
        id_column = values["id_column"] or ("VolumeName" if "VolumeName" in header else "image")
        columns = values["label_columns"]
        if not columns:  # CT-RATE column names when present, else our own
            columns = ([CT_RATE_COLUMNS[n] for n in LUNG_DISEASES]
                       if all(c in header for c in CT_RATE_COLUMNS.values()) else list(LUNG_DISEASES))
        labels = csvlabels.binary_labels(path, id_column, columns, source.scan_ids(), values["missing"])
        return TaskData(list(columns), labels, source,
                        _patients(source, labels, path, id_column, values["patient_column"]))
    found = _source_labels(source, "lung-disease")
    if found is None:
        raise _no_labels("lung-disease", source, "lung-disease")
    return _from_source(source, found)


def _load_staging(options: Mapping[str, Any]) -> TaskData:
    values = resolve_options(STAGING_OPTIONS, options)
    source = _source(values, "staging")
    if values["labels_csv"]:
        names, labels = csvlabels.class_labels(values["labels_csv"], values["id_column"],
                                               values["stage_column"], source.scan_ids(),
                                               missing=values["missing"], parse="stage")
        return TaskData(names, labels, source, _patients(source, labels, values["labels_csv"],
                                                         values["id_column"], values["patient_column"]))
    found = _source_labels(source, "staging")
    if found is None:
        raise _no_labels("staging", source, "stage")
    return _from_source(source, found)


def _load_csv(options: Mapping[str, Any]) -> TaskData:
    values = resolve_options(CSV_OPTIONS, options)
    source = _source(values, "csv")
    path = Path(values["csv"])
    header, _ = csvlabels.read_csv(path)
    not_labels = (values["id_column"], "patient_id", values["patient_column"])
    columns = values["label_columns"] or [c for c in header if c not in not_labels]
    if not columns:
        raise DataError(f"{path}: no label columns besides '{values['id_column']}'")
    labels = csvlabels.binary_labels(path, values["id_column"], columns, source.scan_ids(), values["missing"])
    return TaskData(list(columns), labels, source,
                    _patients(source, labels, path, values["id_column"], values["patient_column"]))


def _load_csv_multiclass(options: Mapping[str, Any]) -> TaskData:
    values = resolve_options(CSV_MULTICLASS_OPTIONS, options)
    source = _source(values, "csv-multiclass")
    names, labels = csvlabels.class_labels(values["csv"], values["id_column"], values["label_column"],
                                           source.scan_ids(), classes=values["classes"],
                                           missing=values["missing"])
    return TaskData(names, labels, source, _patients(source, labels, values["csv"], values["id_column"],
                                                     values["patient_column"]))


LESION_LOCATION_OPTIONS: dict[str, Option] = {
    "source": _SOURCE,
    "labels_csv": Option(Path, None, "CSV with one 0/1 column per lesion type (else the source's labels)"),
    "label_columns": Option(list, None, "columns of labels_csv (default: the 8 DeepLesion type names)"),
    "id_column": _ID, "missing": _MISSING, "patient_column": _PATIENT,
}
LUNG_DISEASE_OPTIONS: dict[str, Option] = {
    "source": _SOURCE,
    "labels_csv": Option(Path, None, "CT-RATE-style CSV (VolumeName, Emphysema, Lung nodule, ...)"),
    "label_columns": Option(list, None, "columns of labels_csv (default: CT-RATE's or the task's names)"),
    "id_column": Option(str, None, "id column (default: VolumeName when present, else image)"),
    "missing": _MISSING, "patient_column": _PATIENT,
}
STAGING_OPTIONS: dict[str, Option] = {
    "source": _SOURCE,
    "labels_csv": Option(Path, None, "clinical CSV with a stage column (I-IV, 1-4, 'Stage IIIA')"),
    "stage_column": Option(str, "stage", "the stage column of labels_csv"),
    "id_column": _ID, "missing": _MISSING, "patient_column": _PATIENT,
}
CSV_OPTIONS: dict[str, Option] = {
    "source": Option((str, dict), None, "scan source, e.g. {name: folder, root: ...}", required=True,
                     component="sources"),
    "csv": Option(Path, None, "clinical CSV: image,label1,label2,...", required=True),
    "label_columns": Option(list, None, "0/1 endpoint columns (default: every column but the id and patient "
                            "columns)"),
    "id_column": _ID, "missing": _MISSING, "patient_column": _PATIENT,
}
CSV_MULTICLASS_OPTIONS: dict[str, Option] = {
    "source": Option((str, dict), None, "scan source, e.g. {name: folder, root: ...}", required=True,
                     component="sources"),
    "csv": Option(Path, None, "clinical CSV", required=True),
    "label_column": Option(str, None, "the endpoint column", required=True),
    "classes": Option(list, None, "class names in order (default: sorted values)"),
    "id_column": _ID, "missing": _MISSING, "patient_column": _PATIENT,
}

TASK_SPECS: list[TaskSpec] = [
    TaskSpec("lesion-location", "multilabel", _load_lesion_location, "auroc",
             "which of the 8 DeepLesion organ types hold a lesion", LESION_LOCATION_OPTIONS),
    TaskSpec("lung-disease", "multilabel", _load_lung_disease, "auroc",
             "emphysema, lung nodule, consolidation, pleural effusion", LUNG_DISEASE_OPTIONS),
    TaskSpec("staging", "multiclass", _load_staging, "auroc",
             "stage I-IV from primary size, nodes and distant metastases", STAGING_OPTIONS),
    TaskSpec("csv", "multilabel", _load_csv, "auroc",
             "0/1 endpoint column(s) of a clinical CSV joined to a scan source", CSV_OPTIONS),
    TaskSpec("csv-multiclass", "multiclass", _load_csv_multiclass, "auroc",
             "one categorical endpoint column of a clinical CSV joined to a scan source",
             CSV_MULTICLASS_OPTIONS),
]
