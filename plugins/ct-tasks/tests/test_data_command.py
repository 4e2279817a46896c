"""`clear-bench data cohort / show`: a synthetic cohort exported to NIfTI + CSV reads back through the
folder source and the csv task with the same labels; `cohort` is the plugin's command under `data`."""

from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
from PIL import Image

from clear_bench.cli import main
from clear_bench.components import load_task
from clear_bench.registry import load_registry

OPTIONS = ["-o", "patients=4", "-o", "slices=8", "-o", "matrix=48", "-o", "cache=false"]


def test_export_roundtrip_and_show(tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["data", "cohort", *OPTIONS, "--export", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "source 'synthetic': 4 scans" in printed
    assert "lesion-location (multilabel, 4 labelled)" in printed and "exported 4 scans" in printed
    assert "staging (multiclass, 4 labelled)" in printed and "lung-disease (multilabel" in printed
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"syn0-{i:05d}.nii.gz" for i in range(4)]
    assert sorted(p.name for p in out.glob("*.csv")) == ["lesion-location.csv", "lung-disease.csv",
                                                          "staging.csv"]
    assert not list(out.glob(".*"))  # no temporary file left beside the exports

    registry = load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)
    synthetic = load_task(registry, registry.task("lesion-location"),
                          {"source": {"name": "synthetic", "patients": 4, "slices": 8, "matrix": 48,
                                      "cache": False}})
    folder = {"name": "folder", "root": str(out)}
    exported = load_task(registry, registry.task("csv"), {"source": folder,
                                                          "csv": str(out / "lesion-location.csv")})
    assert exported.label_names == synthetic.label_names
    # the export's patient_id column carries the source's patients (one scan each) to the csv task
    assert exported.patient_of == synthetic.patient_of == {s: s for s in synthetic.labels}
    for scan_id, labels in synthetic.labels.items():
        np.testing.assert_array_equal(exported.labels[scan_id], labels)
        original = synthetic.source.load(scan_id)
        reread = exported.source.load(scan_id)
        np.testing.assert_array_equal(reread.volume, original.volume)
        np.testing.assert_allclose(reread.spacing, original.spacing, rtol=1e-6)
    staging = load_task(registry, registry.task("staging"), {"source": folder,
                                                             "labels_csv": str(out / "staging.csv")})
    assert len(staging.labels) == 4

    png = tmp_path / "show.png"
    assert main(["data", "show", "syn0-00001", "--source", "synthetic", *OPTIONS, "--out", str(png),
                 "--window", "lung", "W400L40"]) == 0
    assert "lesion boxes" in capsys.readouterr().out
    with Image.open(png) as image:
        assert image.size[0] > 200
    assert main(["data", "show", str(out / "syn0-00002.nii.gz"), "--out", str(tmp_path / "file.png")]) == 0


def test_generate_and_option_errors(capsys):
    assert main(["data", "cohort", *OPTIONS, "--generate"]) == 0
    assert "generated 4 scans" in capsys.readouterr().out
    assert main(["data", "cohort", "-o", "patient=3"]) == 2
    err = capsys.readouterr().err
    assert "--option patient: unknown option of source 'synthetic' (did you mean 'patients'?)" in err
    assert main(["data", "show", "x", "--source", "synthetic", "-o", "preset=impossible",
                 "--out", "x.png"]) == 2
    assert "--option preset: expected one of easy, default, hard, got 'impossible'" in capsys.readouterr().err
    assert main(["data", "cohort", "-o", "patients"]) == 2
    assert "'patients': expected KEY=VALUE" in capsys.readouterr().err
