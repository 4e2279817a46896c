"""Ids from untrusted files cannot steer where a run writes: scan ids from file names and label CSVs, and
patient, task and encoder ids that look like paths (``../../x``, absolute ones, a NUL byte, 300
characters) end up as plain names. Every file the run writes lies under its output, cache and board
folders, and nothing outside them changes."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

NAMED_FILES = {  # file stem in the scan folder -> the scan id it becomes
    "we ird|na;me$(rm -rf x)": "we_ird_na_me_rm_-rf_x",
    "new\nline": "new_line",
    "L" * 230: "L" * 120,
    "ünï☃code": "n_code",
}


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_path_like_ids_cannot_leave_the_run_folders(kit, tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "a" / "b" / "project"  # "../../x" from here still lies inside tmp_path
    scans = project / "scans"
    labels = kit.write_cohort(scans, 6, slices=2, size=16)
    for k, stem in enumerate(NAMED_FILES):
        kit.write_volume(scans / f"{stem}.nii.gz", kit.ct_volume(30 + k, 2, 16))
    outside = Path("/tmp") / f"clear-bench-escape-{uuid.uuid4().hex}"
    hostile = ["../../escaped", f"{outside}", "nul\0id", "../" * 100 + "deep", "Y" * 300,
               f"{outside}/../../etc/x"]
    patients = ["../../p", f"{outside}-patient", "p\0q", "P" * 300, "./.", ".."]
    rows = [f"{scan_id},{label},{patients[k % len(patients)]}" for k, (scan_id, label) in
            enumerate(labels.items())]
    rows += [f'"{stem}.nii.gz",{k % 2},{patients[k]}' for k, stem in enumerate(NAMED_FILES)]
    rows += [f'"{scan_id}",1,x' for scan_id in hostile]  # no such scan: skipped
    (project / "labels.csv").write_bytes(("image,finding,patient_id\n" + "\n".join(rows) + "\n").encode())
    bench = kit.bench_yaml(project, encoders=(
        f"[{{name: hu-reference, id: ../../encoder-escaped, options: {{image_size: 16}}}}, "
        f"{{name: image-probe, id: '{outside}-encoder', options: {{image_size: 16}}}}]"))
    bench.write_text(bench.read_text().replace("id: finding", "id: ../../../task-escaped")
                     .replace("csv: labels.csv", "csv: labels.csv, missing: skip"))
    monkeypatch.chdir(project)
    before = _files(tmp_path)

    result = kit.run_here("run", bench, "--no-progress")
    assert result.returncode == 0, result.stdout

    written = {name: mtime for name, mtime in _files(tmp_path).items() if before.get(name) != mtime}
    roots = [f"a/b/project/{folder}/" for folder in ("run", "cache", "boards")]
    assert written and all(name.startswith(tuple(roots)) for name in written), sorted(written)
    assert not list(Path("/tmp").glob(f"{outside.name}*"))
    assert not (tmp_path / "a" / "escaped").exists() and not (tmp_path / "a" / "encoder-escaped").exists()
    for name in written:  # every name a plain one: no NUL, separator-free parts, no dot-dot parts
        parts = Path(name).parts
        assert all(part not in ("", ".", "..") and "\0" not in part and len(part) <= 160 for part in parts)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", parts[-1]), name
    cache_entries = [name for name in written if name.endswith(".h5")]
    assert cache_entries and all(re.fullmatch(r"a/b/project/cache/[0-9a-f]{16}/[0-9a-f]{2}/[0-9a-f-]+\.h5",
                                              name) for name in cache_entries), cache_entries

    stored = json.loads(next((project / "run" / "tasks").glob("*/results/labels.json")).read_text())
    assert sorted(stored) == sorted([*labels, *NAMED_FILES.values()])
    boards = sorted(p.name for p in (project / "boards").glob("*.md"))
    assert boards == ["_.._.._task-escaped-" + _digest("../../../task-escaped") + ".md", "overall.md"]


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


@pytest.mark.parametrize("scan_id", ["../../x", "/tmp/x", "a/../../b", "nul\0id", "\0", "..", ".", "",
                                     "x" * 300, "\\..\\..\\x", "con", "a\nb"])
def test_safe_filename_gives_plain_distinct_names(scan_id: str) -> None:
    from clear_bench.naming import safe_filename

    name = safe_filename(scan_id)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,130}", name) and not name.startswith(".") and os.sep not in name
    assert safe_filename(scan_id + "!") != name
