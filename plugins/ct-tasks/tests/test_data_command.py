"""`clear-bench data cohort / show`: a synthetic cohort exported to NIfTI + CSV reads back through the
folder source and the csv task with the same labels."""

import argparse
from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
from PIL import Image

from clear_bench.commands import data
from clear_bench.components import load_task
from clear_bench.registry import load_registry


def _run(argv):
    parser = argparse.ArgumentParser(prog="clear-bench")
    parser.add_argument("--plugin", action="append", default=[])
    data.add_parser(parser.add_subparsers(dest="command"))
    return data.run(parser.parse_args(argv))


def test_export_roundtrip_and_show(tmp_path, capsys):
    out = tmp_path / "export"
    options = ["-o", "patients=4", "-o", "slices=8", "-o", "matrix=48", "-o", "cache=false"]
    assert _run(["data", "cohort", *options, "--export", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lesion-location (multilabel, 4 labelled)" in printed and "exported 4 scans" in printed
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"syn0-{i:05d}.nii.gz" for i in range(4)]

    registry = load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)
    synthetic = load_task(registry, registry.task("lesion-location"),
                          {"source": {"name": "synthetic", "patients": 4, "slices": 8, "matrix": 48,
                                      "cache": False}})
    exported = load_task(registry, registry.task("csv"), {"source": {"name": "folder", "root": str(out)},
                                                          "csv": str(out / "lesion-location.csv")})
    assert exported.label_names == synthetic.label_names
    for scan_id, labels in synthetic.labels.items():
        np.testing.assert_array_equal(exported.labels[scan_id], labels)
        original = synthetic.source.load(scan_id)
        reread = exported.source.load(scan_id)
        np.testing.assert_array_equal(reread.volume, original.volume)
        np.testing.assert_allclose(reread.spacing, original.spacing, rtol=1e-6)
    staging = load_task(registry, registry.task("staging"), {"source": {"name": "folder", "root": str(out)},
                                                             "labels_csv": str(out / "staging.csv")})
    assert len(staging.labels) == 4

    png = tmp_path / "show.png"
    assert _run(["data", "show", "syn0-00001", "--source", "synthetic", *options, "--out", str(png),
                 "--window", "lung", "W400L40"]) == 0
    assert "lesion boxes" in capsys.readouterr().out
    with Image.open(png) as image:
        assert image.size[0] > 200
    assert _run(["data", "show", str(out / "syn0-00002.nii.gz"), "--out", str(tmp_path / "file.png")]) == 0
