"""``clear-bench evaluate`` on a folder of CLEAR-layout HDF5 bags and a label CSV."""

from __future__ import annotations

import argparse
import json

import h5py
import numpy as np
import pytest

from clear_bench.commands import evaluate
from clear_bench.errors import DataError, UserError
from clear_bench.evaluation.inputs import read_feature_folder, read_label_csv
from clear_bench.evaluation.synthetic import planted_bags


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugin", action="append", default=[])
    evaluate.add_parser(parser.add_subparsers())
    return parser.parse_args(["evaluate", *argv])


@pytest.fixture
def folder(tmp_path):
    bags, labels = planted_bags(50, 12, 8, n_labels=2, n_signal=2, amplitude=4.0, seed=0, n_windows=2)
    features = tmp_path / "feats"
    features.mkdir()
    lines = ["image,liver,lung"]
    for scan_id, y in labels.items():
        lines.append(f"{scan_id},{int(y[0])},{int(y[1])}")
        if scan_id == "scan-0007":
            continue  # no file: left out, recorded
        with h5py.File(features / f"{scan_id}.h5", "w") as h5:
            h5["feats"] = bags[scan_id].embeddings[:, None, :]  # the public layout's [N, 1, D]
            h5["slice_index"] = bags[scan_id].slice_index
            h5["window_id"] = bags[scan_id].window_id
    with h5py.File(features / "scan-0009.h5", "w") as h5:
        h5["something_else"] = np.zeros(3)
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path, bags


def test_evaluate_writes_results_and_reuses_them(folder, capsys):
    root, _ = folder
    argv = ["--features", str(root / "feats"), "--labels", str(root / "labels.csv"),
            "--out", str(root / "out"), "--aggregator", "abmil", "--aggregator", "mean-pool",
            "--epochs", "3", "--folds", "3",
            "--option", "hidden_dim=16", "--permutations", "1", "--bootstrap", "50", "--lr", "5e-3",
            "--comparison-resamples", "2000"]
    assert evaluate.run(parse(argv)) == 0
    printed = capsys.readouterr().out
    assert "scan-0007: feats: no feature file" in printed and "no dataset 'feats'" in printed
    assert "macro AUROC" in printed and "liver" in printed and "null AUROC [95%]" in printed
    out = root / "out"
    results = out / "tasks" / "labels" / "results"
    cells = {c["aggregator"]: c for c in json.loads((results / "cells.json").read_text())["cells"]}
    summary = json.loads((results / cells["abmil"]["summary"]).read_text())
    assert {m["label"] for m in summary["metrics"]} == {"liver", "lung", "macro"}
    predictions = (results / cells["mean-pool"]["predictions"]).read_text().splitlines()
    assert predictions[0] == "scan_id,repeat,fold,p_liver,p_lung" and len(predictions) == 1 + 48
    manifest = json.loads((out / "run.json").read_text())
    assert set(manifest["tasks"][0]["left_out"]) == {"scan-0007", "scan-0009"}
    # one encoder and no declared reference: nothing to compare in the family; the matrix pairs the heads
    assert json.loads((results / "comparisons.json").read_text()) == []
    matrix = (out / "leaderboards" / "labels.pairs.csv").read_text().splitlines()
    assert len(matrix) == 2 and matrix[1].startswith("feats + abmil,feats + mean-pool,auroc,")
    board = (out / "leaderboards" / "labels.md").read_text()
    assert "## Scans left out" in board and "- scan-0007: feats: no feature file" in board
    folds = sorted((out / "tasks" / "labels" / "folds").glob("*.npz"))
    assert len(folds) == 2 * 3 * 2  # two heads, three folds, real run + one label permutation
    stamps = {path: path.stat().st_mtime_ns for path in folds}
    assert evaluate.run(parse(argv)) == 0
    assert {path: path.stat().st_mtime_ns for path in folds} == stamps  # every fold reused
    assert len(list((out / "tasks" / "labels" / "folds").glob("*.npz"))) == len(folds)
    assert (out / "leaderboards" / "labels.md").read_text() == board


def test_feature_folder_reader(folder):
    root, bags = folder
    read = read_feature_folder(root / "feats", ["scan-0001", "scan-0007", "scan-0009", "../labels"])
    assert set(read.bags) == {"scan-0001"}
    assert set(read.failures) == {"scan-0007", "scan-0009", "../labels"}
    np.testing.assert_array_equal(read.bags["scan-0001"].embeddings, bags["scan-0001"].embeddings)
    np.testing.assert_array_equal(read.bags["scan-0001"].window_id, bags["scan-0001"].window_id)
    assert read_feature_folder(root / "feats", ["scan-0001"]).fingerprint == read.fingerprint


def test_label_csv_types_and_errors(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,stage\na,II\nb,I\nc,IV\nd,\n")
    table = read_label_csv(path)
    assert table.label_type == "multiclass" and table.label_names == ["I", "II", "IV"]
    assert table.labels["c"].tolist() == [2] and table.skipped == ["d"]
    path.write_text("image,x\na,1\nb,0\n")
    assert read_label_csv(path).label_type == "binary"
    path.write_text("image,x,y\na,1,0\nb,0,maybe\n")
    with pytest.raises(DataError, match=r"labels.csv, line 3, column 'y'"):
        read_label_csv(path, label_type="multilabel")
    with pytest.raises(DataError, match="no column 'scan'"):
        read_label_csv(path, id_column="scan")


def test_too_few_scans_is_a_clear_error(folder):
    root, _ = folder
    argv = ["--features", str(root / "feats"), "--labels", str(root / "labels.csv"), "--out", str(root / "o"),
            "--folds", "40"]
    with pytest.raises(UserError, match="too few for 40 folds"):
        evaluate.run(parse(argv))


def test_unknown_option_is_refused(folder):
    root, _ = folder
    argv = ["--features", str(root / "feats"), "--labels", str(root / "labels.csv"), "--out", str(root / "o"),
            "--option", "hiden_dim=8"]
    with pytest.raises(UserError, match="has an option 'hiden_dim'"):
        evaluate.run(parse(argv))
