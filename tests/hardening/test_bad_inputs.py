"""A corpus of bad inputs, each run through ``clear-bench run`` beside good ones: damaged NIfTI, NRRD and MHA
files, broken DICOM series, PNG folders without images, faulty label CSVs, benchmark YAMLs with mistakes
and unusable checkpoints. Every one gets a message naming the file and what is wrong with it; scans that
can be read are scored, and the board lists the rest (the scans left out and the notes of scans kept).

(The reader-level checks of each format are in ``tests/data/test_readers.py``; a checkpoint whose pickle
runs code is refused end to end in ``test_untrusted_checkpoints.py``.)"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

ENCODER = "[{name: hu-reference, options: {image_size: 16}}]"  # 16 x 16 histograms: fast on 2,000 slices


def _data_writers():
    """The DICOM writer of the reader tests (a conftest module, loaded by path: it cannot be imported)."""
    spec = importlib.util.spec_from_file_location("reader_test_writers",
                                                  Path(__file__).parents[1] / "data" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_dicom_series = _data_writers().write_dicom_series


def _rewrite(path: Path, **fields) -> None:
    """Set DICOM ``fields`` of one file in place."""
    ds = pydicom.dcmread(path)
    for name, value in fields.items():
        setattr(ds, name, value)
    ds.save_as(path)


def _sorted_by_position(paths: list[Path]) -> list[Path]:
    def height(path: Path) -> float:
        return float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])

    return sorted(paths, key=height)


def _left_out(boards: Path) -> dict[str, str]:
    """Scan id -> reason, from the scans-left-out CSV beside the ``finding`` board."""
    return {row["scan_id"]: row["reason"] for row in _csv(boards / "finding.scans-left-out.csv")}


def _scored(run: Path) -> list[str]:
    """The scans the ``finding`` board scored (its stored labels)."""
    return sorted(json.loads((run / "tasks" / "finding" / "results" / "labels.json").read_text()))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- scan files -------------------------------------------------------------------------------------------

BAD_SCANS = {  # scan id -> (file or folder that must be named, what the reason must say)
    "zero_nii": ("zero_nii.nii.gz", "empty file (0 bytes)"),
    "cut_nii": ("cut_nii.nii.gz", "truncated or corrupt gzip stream"),
    "magic_nii": ("magic_nii.nii", "not a NIfTI file (its first field, sizeof_hdr, is not 348"),
    "zero_nrrd": ("zero_nrrd.nrrd", "empty file (0 bytes)"),
    "cut_nrrd": ("cut_nrrd.nrrd", "cannot read image"),
    "magic_nrrd": ("magic_nrrd.nrrd", "not an NRRD file"),
    "zero_mha": ("zero_mha.mha", "empty file (0 bytes)"),
    "cut_mha": ("cut_mha.mha", "truncated MetaImage"),
    "magic_mha": ("magic_mha.mha", "not a MetaImage header"),
    "dcm_no_pixels": ("dcm_no_pixels/img002.dcm", "no pixel data (PixelData missing)"),
    "dcm_same_position": ("dcm_same_position/", "two slices of the series share one position"),
    "dcm_sizes": ("dcm_sizes", "slices of one series differ in size: [(8, 8), (16, 16)]"),
    "dcm_no_position": ("dcm_no_position/", "ImagePositionPatient missing; slices cannot be ordered"),
}
NOTED = {  # scan id -> what its note must say (the scan is kept)
    "dcm_uneven": "uneven slice spacing (2.50..6.50 mm); using the median 2.50 mm",
    "dcm_two_series": "2 CT series; series 'largest' read the one of",
}


def _scan_corpus(kit, scans: Path) -> dict[str, int]:
    """Good scans (8 NIfTI, one NRRD, MHA and DICOM series, a 1-slice and a 2,000-slice scan, DICOM with
    uneven spacing and with two series) and the bad ones of :data:`BAD_SCANS`; returns every id's label."""
    labels = kit.write_cohort(scans, 8, slices=3, size=16)
    extra = ["good_nrrd", "good_mha", "dcm_good", "one_slice", "tall", *NOTED, *BAD_SCANS]
    labels |= {scan_id: k % 2 for k, scan_id in enumerate(extra)}
    kit.write_volume(scans / "good_nrrd.nrrd", kit.ct_volume(20, 3, 16))
    kit.write_volume(scans / "good_mha.mha", kit.ct_volume(21, 3, 16))
    kit.write_volume(scans / "one_slice.nii.gz", kit.ct_volume(22, 1, 16))
    kit.write_volume(scans / "tall.nii.gz", kit.ct_volume(23, 2000, 8))
    hu = kit.ct_volume(24, 5, 16).astype(np.float32)
    write_dicom_series(scans / "dcm_good", hu)
    uneven = _sorted_by_position(write_dicom_series(scans / "dcm_uneven", hu))
    for path in uneven[4:]:  # the last gap is 6.5 mm instead of 2.5
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        _rewrite(path, ImagePositionPatient=[f"{x:.4f}", f"{y:.4f}", f"{z + 4.0:.4f}"])
    write_dicom_series(scans / "dcm_two_series", hu, prefix="a")
    write_dicom_series(scans / "dcm_two_series", hu[:3] + 200.0, (5.0, 0.8, 0.7), prefix="b")
    write_dicom_series(scans / "dcm_no_pixels", hu, without_pixels=2, shuffle_seed=None)
    same = _sorted_by_position(write_dicom_series(scans / "dcm_same_position", hu))
    _rewrite(same[3], ImagePositionPatient=pydicom.dcmread(same[2]).ImagePositionPatient)
    sizes = write_dicom_series(scans / "dcm_sizes", hu)
    _rewrite(sizes[1], Rows=8, Columns=8, PixelData=np.zeros((8, 8), np.int16).tobytes())
    unplaced = pydicom.dcmread(write_dicom_series(scans / "dcm_no_position", hu)[3])
    del unplaced.ImagePositionPatient
    unplaced.save_as(unplaced.filename)

    nifti, nrrd, mha = ((scans / name).read_bytes() for name in ("case000.nii.gz", "good_nrrd.nrrd",
                                                                  "good_mha.mha"))
    for stem, good, magic in (("nii", nifti, b"XXXX" * 100), ("nrrd", nrrd, b"XXXX" + nrrd[4:]),
                              ("mha", mha, b"\x89PNG junk\n" * 4)):
        suffix = ".nii.gz" if stem == "nii" else f".{stem}"
        (scans / f"zero_{stem}{suffix}").write_bytes(b"")
        (scans / f"cut_{stem}{suffix}").write_bytes(good[: len(good) // 2])
        (scans / (f"magic_{stem}.nii" if stem == "nii" else f"magic_{stem}{suffix}")).write_bytes(magic)
    return labels


@pytest.mark.slow
def test_bad_scan_files_are_left_out_by_name_and_good_scans_are_scored(kit, tmp_path: Path) -> None:
    labels = _scan_corpus(kit, tmp_path / "scans")
    kit.write_labels(tmp_path / "labels.csv", labels)
    bench = kit.bench_yaml(tmp_path, encoders=ENCODER)
    result = kit.run_here("run", bench, "--no-progress")
    assert result.returncode == 0, result.stdout

    left_out = _left_out(tmp_path / "boards")
    assert sorted(left_out) == sorted(BAD_SCANS)
    for scan_id, (file, reason) in BAD_SCANS.items():
        assert str(tmp_path / "scans" / file) in left_out[scan_id] and reason in left_out[scan_id], scan_id
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["tasks"][0]["left_out"] == sorted(BAD_SCANS)
    assert len(manifest["failures"]) == len(BAD_SCANS)
    for scan_id, (file, _) in BAD_SCANS.items():
        assert any(f": {scan_id}: " in line and file in line for line in manifest["failures"]), scan_id
    board = (tmp_path / "boards" / "finding.md").read_text()
    assert f"{len(BAD_SCANS)} scans failed for at least one encoder" in board
    assert all(f"- {scan_id}: hu-reference: " in board for scan_id in BAD_SCANS)

    assert _scored(tmp_path / "run") == sorted(set(labels) - set(BAD_SCANS))  # 1-slice and tall ones too

    notes = _csv(tmp_path / "boards" / "finding.scan-notes.csv")
    assert sorted({row["scan_id"] for row in notes}) == sorted(NOTED)
    for scan_id, text in NOTED.items():
        assert any(row["scan_id"] == scan_id and text in row["note"] for row in notes), notes
        assert f"- {scan_id}: {text}" in board
    assert "## Scan notes" in board and "finding.scan-notes.csv" in board

    before = kit.boards(tmp_path / "boards")
    again = kit.run_here("run", bench, "--no-progress")  # every entry served from the cache
    assert again.returncode == 0, again.stdout
    assert "0 extracted" in again.stdout
    assert kit.boards(tmp_path / "boards") == before  # the notes come back from the cache entries


def test_png_folders_without_images_are_left_out(kit, tmp_path: Path) -> None:
    root = tmp_path / "seed"
    rng = np.random.default_rng(0)
    labels = {}
    for k in range(6):
        folder = root / f"p{k}"
        folder.mkdir(parents=True)
        for s in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{s}.png")
        labels[f"p{k}"] = k % 2
    (root / "text_as_png").mkdir()
    (root / "text_as_png" / "0.png").write_text("this is not an image")
    (root / "no_png").mkdir()
    (root / "no_png" / "notes.txt").write_text("nothing to read")
    (root / "one_bad").mkdir()
    for s in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / "one_bad" / f"{s}.png")
    (root / "one_bad" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a PNG signature, then junk
    bad = {"text_as_png": "text_as_png/0.png", "no_png": "no_png: no PNG slices", "one_bad": "one_bad/2.png"}
    kit.write_labels(tmp_path / "labels.csv", labels | {scan_id: 1 for scan_id in bad})
    probe = "[{name: image-probe, options: {image_size: 16}}]"
    bench = kit.bench_yaml(tmp_path, scans="seed", encoders=probe)
    bench.write_text(bench.read_text().replace("name: folder", "name: seed-png"))
    result = kit.run_here("run", bench, "--no-progress")
    assert result.returncode == 0, result.stdout
    left_out = _left_out(tmp_path / "boards")
    assert sorted(left_out) == sorted(bad)
    for scan_id, named in bad.items():
        assert named in left_out[scan_id] and str(root) in left_out[scan_id], left_out[scan_id]
    assert "cannot identify image file" in left_out["text_as_png"] and "unreadable PNG" in left_out["one_bad"]
    assert _scored(tmp_path / "run") == sorted(labels)
    # the HU reference reads none of these pre-windowed scans: it sits out this task, saying why, rather
    # than taking every scan out of every row
    board = (tmp_path / "boards" / "finding.md").read_text()
    assert "| image-probe |" in board and "| hu-reference |" not in board
    reason = json.loads((tmp_path / "run" / "run.json").read_text())["encoders_left_out_of_tasks"]
    assert list(reason) == ["finding"] and list(reason["finding"]) == ["hu-reference"]
    assert reason["finding"]["hu-reference"] == (
        "embedded none of the 9 scans of task finding (6 of them: scan '<scan>' holds pre-windowed images, "
        "not Hounsfield units; an encoder with input 'hu' cannot read it)")
    assert f"- `hu-reference` (task finding): {reason['finding']['hu-reference']}" in board


# --- label CSVs -------------------------------------------------------------------------------------------

CSV_ERRORS = {  # name -> (CSV text, extra task option, what the message must say after the file name)
    "duplicate_id": ("image,finding\ncase000,1\ncase001,0\ncase000,0\n", "",
                     "line 4: 'case000' also on line 2 (image)"),
    "unknown_id": ("image,finding\ncase000,1\ncase001,0\nghost,0\n", "",
                   "1 patient(s) in column 'image' have no scan in the source: ghost"),
    "empty_id": ("image,finding\ncase000,1\n,0\n", "", "line 3: empty 'image'"),
    "non_numeric": ("image,finding\ncase000,1\ncase001,maybe\n", "",
                    "line 3: column 'finding' has 'maybe', expected 0/1"),
    "missing_column": ("image,other\ncase000,1\n", ", label_columns: [finding]",
                       "missing column(s) finding (columns: image, other)"),
    "ragged_row": ("image,finding\ncase000,1\ncase001,0,7,8\n", "", "cannot parse label CSV"),
}


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory, kit) -> Path:
    """Six NIfTI scans case000..case005, shared by the CSV and YAML cases (each writes its own files)."""
    folder = tmp_path_factory.mktemp("small")
    kit.write_cohort(folder / "scans", 6, slices=2, size=16)
    return folder


@pytest.mark.parametrize("case", sorted(CSV_ERRORS))
def test_a_faulty_label_csv_stops_the_run_naming_file_line_and_column(kit, small_folder: Path, case: str):
    text, option, message = CSV_ERRORS[case]
    (small_folder / f"{case}.csv").write_text(text)
    bench = kit.bench_yaml(small_folder, name=case, labels=f"{case}.csv", encoders=ENCODER, out=f"run-{case}")
    if option:
        bench.write_text(bench.read_text().replace(f"csv: {case}.csv", f"csv: {case}.csv{option}"))
    result = kit.run_here("run", bench, "--no-progress")
    assert result.returncode == 2, result.stdout
    assert f"error: {small_folder / f'{case}.csv'}: " in result.stdout, result.stdout
    assert message in result.stdout, result.stdout
    assert "Traceback" not in result.stdout


def test_an_empty_label_cell_leaves_that_scan_out_with_a_warning(kit, small_folder: Path) -> None:
    path = small_folder / "gaps.csv"
    path.write_text("image,finding\ncase000,1\ncase001,\ncase002,0\ncase003,NA\ncase004,0\ncase005,1\n")
    bench = kit.bench_yaml(small_folder, name="gaps", labels="gaps.csv", encoders=ENCODER, out="run-gaps",
                           boards="boards-gaps")
    result = kit.run_here("run", bench, "--no-progress")
    assert result.returncode == 0, result.stdout
    assert (f"{path}: 2 row(s) left out for an empty label cell: line 3 ('case001'): finding; "
            "line 5 ('case003'): finding") in result.stdout
    assert _scored(small_folder / "run-gaps") == ["case000", "case002", "case004", "case005"]


# --- benchmark YAMLs --------------------------------------------------------------------------------------

def _yaml_cases(good: str, marker: Path) -> dict[str, tuple[str, str]]:
    """name -> (YAML text, what the message must say); each breaks ``good`` in one way."""
    return {
        "unknown_key": (good + "colour: blue\n", "colour: unknown key; expected one of: name, device"),
        "misspelt_key": (good.replace("folds: 2,", "foldz: 2,"),
                         "crossval.foldz: unknown key (did you mean 'folds'?)"),
        "wrong_type": (good.replace("folds: 2,", "folds: two,"),
                       "crossval.folds: expected int, got str 'two'"),
        "wrong_nested_type": (good.replace("batch_size: 16,", "batch_size: sixteen,"),
                              "extraction.batch_size: expected int, got str 'sixteen'"),
        "scalar_for_list": (good.replace("encoders: [{name: hu-reference, options: {image_size: 16}}]",
                                         "encoders: 7"), "encoders: expected list, got int 7"),
        "unknown_head": (good.replace("name: mean-pool", "name: mean-pooling"),
                         "aggregators[0].name: unknown aggregator 'mean-pooling'"),
        "unknown_task": (good.replace("  - name: csv", "  - name: csvv"),
                         "tasks[0].name: unknown task 'csvv'"),
        "unknown_encoder": (good.replace("name: hu-reference", "name: hu-referense"),
                            "encoders[0].name: unknown encoder 'hu-referense' (did you mean "),
        "unknown_task_option": (good.replace("csv: labels.csv", "csv: labels.csv, colour: blue"),
                                "tasks[0].options.colour: unknown option for task 'csv'; expected: source"),
        "unknown_plugin": (good.replace("plugins: [", "plugins: [/no/such/plugin.py, "),
                           "plugins[0]: plugin file or folder not found: /no/such/plugin.py"),
        "missing_tasks": ("\n".join(line for line in good.splitlines() if not line.startswith(
            ("tasks:", "  - name: csv", "    id:", "    options:"))) + "\n",
            "tasks: required key is missing"),
        "missing_task_option": (good.replace("csv: labels.csv", "label_columns: [finding]"),
                                "tasks[0].options.csv: required option is missing"),
        "bad_indentation": (good.replace("\ntasks:\n  - name: csv\n    id: finding\n",
                                         "\ntasks:\n  - name: csv\n   id: finding\n"), "not valid YAML"),
        "tab_indentation": (good.replace("\ncrossval:", "\n\tcrossval:"), "not valid YAML"),
        "not_a_mapping": ("- name: hard\n- device: cpu\n", "<top>: expected a mapping of settings, got list"),
        "empty_file": ("", "<top>: expected a mapping of settings, got nothing (null)"),
        "python_tag": (f"!!python/object/apply:os.system ['touch {marker}']\n",
                       "not valid YAML: could not determine a constructor for the tag"),
    }


def test_every_kind_of_yaml_mistake_names_the_file_and_the_field(kit, small_folder: Path) -> None:
    kit.write_labels(small_folder / "labels.csv", {f"case{k:03d}": k % 2 for k in range(6)})
    good = kit.bench_yaml(small_folder, name="good", encoders=ENCODER, out="run-yaml").read_text()
    marker = small_folder / "yaml-ran-code"
    for name, (text, message) in _yaml_cases(good, marker).items():
        path = small_folder / f"mistake-{name}.yaml"
        path.write_text(text)
        result = kit.run_here("run", path, "--no-progress")
        assert result.returncode == 2, (name, result.stdout)
        assert f"error: {path}" in result.stdout and message in result.stdout, (name, result.stdout)
        assert "Traceback" not in result.stdout, name
    assert not (small_folder / "run-yaml").exists() and not marker.exists()  # nothing ran


# --- checkpoints ------------------------------------------------------------------------------------------

def test_unusable_checkpoints_leave_out_their_encoder_naming_file_and_field(kit, small_folder: Path) -> None:
    from clear_bench_lecl.backbones import build_backbone
    from clear_bench_lecl.checkpoint import save_encoder_checkpoint

    from clear_bench.specs import Preprocessing

    arch, kwargs = "vit_conv_small", {"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32}
    folder = small_folder / "weights"
    good = folder / "good.pt"
    folder.mkdir()
    save_encoder_checkpoint(good, arch=arch, arch_kwargs=kwargs, state_dict=build_backbone(arch, **kwargs)
                            .state_dict(), preprocessing=Preprocessing(image_size=32), config={})
    payload = torch.load(good, weights_only=True)

    def variant(name: str, change) -> Path:
        body = {**payload, "state_dict": dict(payload["state_dict"])}
        change(body)
        torch.save(body, folder / f"{name}.pt")
        return folder / f"{name}.pt"

    state = payload["state_dict"]
    renamed = next(iter(state))
    cases = {  # encoder id -> (file, what the reason must say)
        "wrong_keys": (variant("wrong_keys", lambda b: b["state_dict"].update(
            {"head.bogus": b["state_dict"].pop(renamed)})),
            f"does not match arch '{arch}': missing keys [{renamed}]; unexpected keys [head.bogus]"),
        "wrong_shape": (variant("wrong_shape", lambda b: b["state_dict"].update(
            {renamed: torch.zeros(3, *state[renamed].shape)})), f"size mismatch for {renamed}"),
        "non_tensor": (variant("non_tensor", lambda b: b["state_dict"].update({renamed: [0.0, 1.0]})),
                       f"field 'state_dict': [{renamed}] hold(s) a list, not a tensor"),
        "state_not_mapping": (variant("state_not_mapping", lambda b: b.update({"state_dict": [1, 2]})),
                              "field 'state_dict' is a list, expected a mapping of parameter names"),
        "missing_field": (variant("missing_field", lambda b: b.pop("arch")), "missing field(s) arch"),
        "not_a_checkpoint": (variant("not_a_checkpoint", lambda b: b.update({"format": "something-else"})),
                             "field 'format' is 'something-else', expected 'clear-bench/lecl-encoder'"),
    }
    kit.write_labels(small_folder / "labels.csv", {f"case{k:03d}": k % 2 for k in range(6)})
    rows = "".join(f", {{name: lecl-vit, id: {name}, options: {{checkpoint: {path}}}}}"
                   for name, (path, _) in cases.items())
    bench = kit.bench_yaml(small_folder, name="weights", encoders=ENCODER[:-1] + rows + "]",
                           out="run-weights", boards="boards-weights")
    result = kit.run_here("run", bench, "--no-progress")
    assert result.returncode == 0, result.stdout
    reasons = json.loads((small_folder / "run-weights" / "run.json").read_text())["encoders_left_out_reasons"]
    assert sorted(reasons) == sorted(cases)
    for name, (path, message) in cases.items():
        assert reasons[name].startswith(f"{path}: ") and message in reasons[name], reasons[name]
        assert "\n" not in reasons[name]
    board = (small_folder / "boards-weights" / "finding.md").read_text()
    assert "| hu-reference |" in board
    assert all(f"`{name}`: {path}" in board for name, (path, _) in cases.items())


# --- encoders that can read none of a task's scans ---------------------------------------------------------

def test_an_encoder_sits_out_a_task_only_when_another_encoder_reads_its_scans() -> None:
    from clear_bench.data.scan import ScanFailure
    from clear_bench.extraction import ExtractionReport
    from clear_bench.pipeline.extract import Extraction, leave_out_encoders_that_read_nothing

    def report(kept: list[str], failed: list[str]) -> ExtractionReport:
        failures = [ScanFailure(scan_id, f"scan '{scan_id}' is unreadable") for scan_id in failed]
        return ExtractionReport("e", "fp32", "cpu", keys={scan_id: "k" for scan_id in kept}, failed=failures)

    mixed = Extraction([], {"t": {"a": "hu: scan 'a' is unreadable", "b": "hu: scan 'b' is unreadable"}},
                       reports=[("hu", "t", report([], ["a", "b", "c"])),
                                ("png", "t", report(["a", "b"], ["c"]))])
    leave_out_encoders_that_read_nothing(mixed)
    assert mixed.left_out_of_task == {"t": {"hu": "embedded none of the 3 scans of task t (3 of them: scan "
                                                  "'<scan>' is unreadable)"}}
    assert mixed.failed == {"t": {"c": "png: scan 'c' is unreadable"}}  # the others' failures only

    everything_fails = {"t": {"a": "x: scan 'a' is unreadable"}}
    broken = Extraction([], {k: dict(v) for k, v in everything_fails.items()},
                        reports=[("x", "t", report([], ["a"])), ("y", "t", report([], ["a"]))])
    leave_out_encoders_that_read_nothing(broken)
    assert broken.left_out_of_task == {} and broken.failed == everything_fails  # nobody reads them: unchanged
