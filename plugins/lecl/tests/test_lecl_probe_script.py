"""benchmarks/pretrain/probe.py, the recipe-selection probe: its scan-level part averages each scan's slices
per window, finds a label that lives in the features and not one that does not, and its paired bootstrap
tells a real gain from none."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from clear_bench_lecl.pretrain.store import SliceTable

ROOT = Path(__file__).resolve().parents[3]


def _load_probe():
    path = ROOT / "benchmarks" / "pretrain" / "probe.py"
    spec = importlib.util.spec_from_file_location("pretrain_probe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


probe = _load_probe()


def test_scan_features_are_per_window_means_concatenated():
    images = [np.zeros((1, 4, 4), np.uint8)] * 6
    table = SliceTable.from_images(images, [np.zeros((0, 4))] * 6, scan_ids=["a", "b"],
                                   scan_of=[0, 0, 0, 1, 1, 1], slice_of=[0, 0, 1, 0, 0, 1],
                                   window_of=[0, 1, 1, 0, 1, 1], windows=("soft-tissue", "lung"))
    values = np.arange(12, dtype=float).reshape(6, 2)
    features = probe.scan_features(values, table)
    np.testing.assert_allclose(features, [[0, 1, 3, 4], [6, 7, 9, 10]])


def test_scan_probe_and_paired_bootstrap_tell_signal_from_none():
    rng = np.random.default_rng(0)
    labels = (rng.random((120, 3)) < 0.4).astype(int)
    informative = labels + 0.8 * rng.standard_normal(labels.shape)
    noise = rng.standard_normal((120, 3))
    good = probe.scan_probe(np.hstack([informative, noise]), labels, folds=5, seed=0)
    blind = probe.scan_probe(rng.standard_normal((120, 6)), labels, folds=5, seed=0)
    assert probe.macro_auroc(labels, good) > 0.75
    assert abs(probe.macro_auroc(labels, blind) - 0.5) < 0.12
    delta, low, high, p = probe.paired_bootstrap(labels, good, blind, resamples=300, seed=0)
    assert delta > 0.2 and 0 < low < delta < high and p < 0.01
    delta, low, high, p = probe.paired_bootstrap(labels, good, good, resamples=300, seed=0)
    assert delta == low == high == 0 and p == 1.0
