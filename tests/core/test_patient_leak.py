"""The patient leak, simulated end to end through ``run``: two scans per patient that share a patient's
"fingerprint", labels that are pure noise drawn per patient. With the patients named, folds keep a
patient's scans together and the board's AUROC is chance; without them the scans of one patient fall into
different folds, a head that memorises the training scans "predicts" their twins in the test fold, and the
board says "scan-level" and the run warns."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import clear_bench
from clear_bench.components import build_source
from clear_bench.registry import load_registry
from clear_bench.specs import PatientSource

PLUGIN = '''
"""Leak simulation: a PatientSource of twin scans, a noise task, and an encoder that sees the fingerprint."""

import numpy as np

from clear_bench import hookimpl
from clear_bench.data.scan import Scan
from clear_bench.specs import (Encoder, EncoderSpec, Option, Preprocessing, SourceSpec, TaskData, TaskSpec,
                               resolve_options, stable_hash)

SOURCE_OPTIONS = {
    "patients": Option(int, 60, "patients, two scans each"),
    "slices": Option(int, 4, "axial slices per scan"),
    "matrix": Option(int, 32, "rows and columns per slice"),
    "pattern_hu": Option((float, int), 300.0, "std of the patient's fingerprint (HU)"),
    "noise_hu": Option((float, int), 20.0, "std of each scan's own noise (HU)"),
    "seed": Option(int, 0, "generator seed"),
}


class TwinScans:
    """Scans ``pt-NNN-a`` and ``pt-NNN-b`` of patient ``pt-NNN``: the same random HU pattern (the patient's
    fingerprint) plus small noise of each scan."""

    name = "twin-scans"

    def __init__(self, options):
        self.options = dict(options)

    def scan_ids(self):
        return [f"pt-{p:03d}-{s}" for p in range(self.options["patients"]) for s in "ab"]

    def patient_id(self, scan_id):
        return scan_id.rsplit("-", 1)[0]

    def fingerprint(self, scan_id):
        return stable_hash(["twin-scans", self.options, scan_id])

    def load(self, scan_id):
        o = self.options
        patient = int(self.patient_id(scan_id)[3:])
        shape = (o["slices"], o["matrix"], o["matrix"])
        pattern = np.random.default_rng([o["seed"], patient]).normal(0.0, o["pattern_hu"], shape)
        scan = "ab".index(scan_id[-1])
        noise = np.random.default_rng([o["seed"], patient, 1 + scan]).normal(0.0, o["noise_hu"], shape)
        return Scan(scan_id, (40.0 + pattern + noise).astype(np.float32))


TASK_OPTIONS = {
    "source": Option((str, dict), "twin-scans", "the scans", component="sources"),
    "report_patients": Option(bool, True, "fill TaskData.patient_of from the source (else None)"),
    "seed": Option(int, 0, "seed of the noise labels"),
}


def load_noise_task(options):
    values = resolve_options(TASK_OPTIONS, options)
    source = values["source"]
    ids = source.scan_ids()
    patients = sorted({source.patient_id(i) for i in ids})
    order = np.random.default_rng(values["seed"]).permutation(len(patients))
    positive = {patients[k] for k in order[: len(patients) // 2]}  # pure noise, shared by a patient's scans
    labels = {i: np.array([float(source.patient_id(i) in positive)], np.float32) for i in ids}
    patient_of = {i: source.patient_id(i) for i in ids} if values["report_patients"] else None
    return TaskData(["finding"], labels, source, patient_of)


def build_pixels(options):
    import torch

    class Pixels(torch.nn.Module):
        """The resized slice's HU values (/ 1000), flattened: no weights at all."""

        def forward(self, x):
            return x.flatten(1) / 1000.0

    size = int(options["image_size"])
    return Encoder(name="pixels", model=Pixels().eval(), embed_dim=size * size,
                   preprocessing=Preprocessing(image_size=size, input="hu", channels=1, mean=(0.0,),
                                               std=(1.0,)),
                   weights_digest="none", options={"image_size": size, "version": 1})


@hookimpl
def clear_bench_sources():
    return [SourceSpec("twin-scans", TwinScans, "two scans per patient sharing a fingerprint",
                       SOURCE_OPTIONS)]


@hookimpl
def clear_bench_tasks():
    return [TaskSpec("noise-finding", "binary", load_noise_task, description="labels drawn per patient",
                     options=TASK_OPTIONS)]


@hookimpl
def clear_bench_encoders():
    return [EncoderSpec("pixels", build_pixels, embed_dim=None, weights_source="none (non-learned)",
                        description="the downsampled slice, flattened",
                        options={"image_size": Option(int, 16, "slices are resized to this size")})]
'''

BENCH = """
name: leak
device: cpu
output_dir: run
cache_dir: cache
leaderboard_dir: boards
plugins: [leak_plugin.py]
extraction: {batch_size: 64, num_workers: 0}
encoders:
  - name: hu-reference
    options: {image_size: 32}
  - pixels
tasks:
  - {name: noise-finding, id: with-patients, options: {report_patients: true}}
  - {name: noise-finding, id: without-patients, options: {report_patients: false}}
aggregators:
  - {name: mean-pool, options: {dropout: 0.0}}
crossval: {folds: 5, epochs: 30, patience: 30, lr: 0.01, batch_size: 16, bootstrap: 200, permutations: 0,
           comparison_resamples: 2000, workers: 1}
"""


def test_patient_leak_is_closed_by_naming_patients(tmp_path: Path, caplog) -> None:
    (tmp_path / "leak_plugin.py").write_text(PLUGIN)
    config = tmp_path / "leak.yaml"
    config.write_text(BENCH)
    source = build_source(load_registry([tmp_path / "leak_plugin.py"]), "twin-scans")
    assert isinstance(source, PatientSource) and len(source.scan_ids()) == 120
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="clear_bench"):
        result = clear_bench.run(config)
    seconds = time.perf_counter() - started
    tables = clear_bench.load_results(result.run_dir)
    rows = tables.rows.set_index(["task", "encoder"])
    print(f"\nleak simulation ({seconds:.1f} s):\n"
          + rows[["auroc", "auroc_ci_low", "auroc_ci_high", "level"]].to_string())

    # the fold assignment itself: with patients a patient's two scans share a test fold, without them
    # most patients have their scans in two different folds (4 in 5 for a random assignment)
    folds = tables.predictions.query("encoder == 'pixels'").assign(
        patient=lambda frame: frame["scan_id"].str.rsplit("-", n=1).str[0])
    split = folds.groupby(["task", "patient"])["fold"].nunique().gt(1).groupby("task").mean()
    print("patients whose two scans fall into different folds:", split.to_dict())
    assert split["with-patients"] == 0.0
    assert split["without-patients"] > 0.5

    # with patients: chance, and the board says patient-level, with no warning
    for encoder in ("hu-reference", "pixels"):
        row = rows.loc[("with-patients", encoder)]
        standard_error = (row["auroc_ci_high"] - row["auroc_ci_low"]) / (2 * 1.96)
        assert abs(row["auroc"] - 0.5) < 3 * standard_error, (encoder, row["auroc"], standard_error)
        assert row["level"] == "patient-level"
    with_board = (tmp_path / "boards" / "with-patients.md").read_text()
    assert "5-fold patient-level cross-validation" in with_board
    assert "Some scans name no patient" not in with_board

    # without them: scan-level, said on the board and warned in the log
    assert (rows.loc["without-patients", "level"] == "scan-level").all()
    without_board = (tmp_path / "boards" / "without-patients.md").read_text()
    assert "5-fold scan-level cross-validation" in without_board
    assert "Some scans name no patient" in without_board
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "name no patient" in r.getMessage()]
    assert len(warnings) == 1 and "task without-patients: 120 of 120 scans name no patient" in warnings[0]

    # and the leak: the head memorises training scans, their twins in the test fold come out "predicted"
    leak = rows.loc[("without-patients", "pixels")]
    assert leak["auroc"] > 0.75 and leak["auroc_ci_low"] > 0.6, leak["auroc"]
