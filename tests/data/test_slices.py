"""Slice selection, windowing modes and resizing of scans into encoder instances."""

import numpy as np
import pytest

from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan, select_slices, slice_instances
from clear_bench.data.windowing import PRESETS
from clear_bench.errors import ConfigError, DataError


def _scan(n=6, size=32, dz=2.5):
    # slice i is filled with a constant HU that encodes its index
    hu = np.stack([np.full((size, size), -1000.0 + 300.0 * i) for i in range(n)]).astype(np.float32)
    return Scan("s1", hu, spacing=(dz, 0.7, 0.7))


def test_select_every_kth_and_by_spacing():
    scan = _scan(n=10, dz=2.5)
    np.testing.assert_array_equal(select_slices(scan, SlicePlan(slice_step=3)), [0, 3, 6, 9])
    np.testing.assert_array_equal(select_slices(scan, SlicePlan(slice_spacing_mm=5.0)), [0, 2, 4, 6, 8])
    # a spacing finer than the slices keeps every slice exactly once
    np.testing.assert_array_equal(select_slices(scan, SlicePlan(slice_spacing_mm=1.0)), np.arange(10))
    assert select_slices(scan, SlicePlan(slice_spacing_mm=100.0)).tolist() == [0]


def test_per_window_is_slice_major_with_window_ids():
    scan = _scan(n=3)
    plan = SlicePlan(image_size=16, channels=3)
    inst = slice_instances(scan, plan)
    assert inst.images.shape == (9, 3, 16, 16) and inst.images.dtype == np.float32
    assert inst.slice_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert inst.window_id.tolist() == [0, 1, 2] * 3
    for row in range(9):
        hu = -1000.0 + 300.0 * inst.slice_index[row]
        expected = PRESETS[plan.windows[inst.window_id[row]]].apply(np.array([hu]))[0]
        np.testing.assert_allclose(inst.images[row], expected, atol=1e-5)
    assert inst.images.min() >= 0.0 and inst.images.max() <= 1.0


def test_stacked_puts_windows_in_channels():
    scan = _scan(n=4)
    inst = slice_instances(scan, SlicePlan(window_mode="stacked", image_size=8, slice_step=2))
    assert inst.images.shape == (2, 3, 8, 8)
    assert inst.window_id.tolist() == [-1, -1]
    assert inst.slice_index.tolist() == [0, 2]
    np.testing.assert_allclose(inst.images[1, 1], PRESETS["lung"].apply(np.array([-400.0]))[0], atol=1e-5)
    with pytest.raises(ConfigError, match="exactly 3"):
        SlicePlan(window_mode="stacked", windows=("lung",))


def test_hu_input_and_prewindowed():
    scan = _scan(n=2)
    inst = slice_instances(scan, SlicePlan(input="hu", channels=1, image_size=16))
    assert inst.images.shape == (2, 1, 16, 16)
    np.testing.assert_allclose(inst.images[1], -700.0, atol=1e-3)
    assert inst.window_id.tolist() == [-1, -1]

    pre = Scan("p", np.full((3, 20, 20), 0.25, np.float32), prewindowed=True)
    inst = slice_instances(pre, SlicePlan(image_size=10))
    assert inst.images.shape == (3, 3, 10, 10) and inst.window_id.tolist() == [0, 0, 0]
    np.testing.assert_allclose(inst.images, 0.25, atol=1e-6)
    with pytest.raises(DataError, match="pre-windowed"):
        slice_instances(pre, SlicePlan(input="hu"))


def test_resize_is_antialiased_and_keeps_aspect():
    # a 1-pixel checkerboard averages to grey when shrunk with antialiasing
    board = np.where((np.indices((64, 64)).sum(0) % 2) == 0, 1000.0, -1000.0).astype(np.float32)
    inst = slice_instances(Scan("c", board[None]), SlicePlan(input="hu", channels=1, image_size=16))
    assert abs(float(inst.images.mean())) < 50 and float(inst.images.std()) < 50
    # a non-square slice is padded with air, not stretched
    wide = np.zeros((1, 16, 32), np.float32)
    inst = slice_instances(Scan("w", wide), SlicePlan(input="hu", channels=1, image_size=32))
    assert inst.images[0, 0, 0, 16] == pytest.approx(-1024.0)
    assert inst.images[0, 0, 16, 16] == pytest.approx(0.0)


def test_fingerprint_tracks_pixels_not_names():
    base = SlicePlan()
    assert base.fingerprint() == SlicePlan(windows=("W400L40", "lung", "bone")).fingerprint()
    assert base.fingerprint() != SlicePlan(image_size=128).fingerprint()
    assert base.fingerprint() != SlicePlan(windows=("W350L40", "lung", "bone")).fingerprint()
    assert SlicePlan(input="hu", channels=1).fingerprint() == SlicePlan(
        input="hu", channels=1, windows=("lung",)).fingerprint()
