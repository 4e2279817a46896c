"""What the workers feed the model: a volume encoder's volumes at its declared depth, failure locations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clear_bench.data.scan import Scan
from clear_bench.data.slices import SlicePlan
from clear_bench.extraction import make_instances, scan_location
from clear_bench.specs import LocatedSource, Preprocessing


def test_a_volume_encoder_gets_volumes_resampled_to_its_declared_depth(scans):
    source, ids = scans
    scan = source.load(ids[0])
    plan = SlicePlan(windows=("soft-tissue", "lung"), image_size=32)
    prep = Preprocessing(image_size=32, depth=4)
    images, slice_index, window_id = make_instances(scan, plan, prep, "volume")
    assert images.shape == (2, 3, 4, 32, 32) and images.dtype == np.float32
    np.testing.assert_array_equal(slice_index, [-1, -1])
    np.testing.assert_array_equal(window_id, [0, 1])

    as_read, _, _ = make_instances(scan, plan, Preprocessing(image_size=32), "volume")  # depth None
    assert as_read.shape == (2, 3, scan.num_slices, 32, 32)
    same, _, _ = make_instances(scan, plan, Preprocessing(image_size=32, depth=scan.num_slices), "volume")
    np.testing.assert_array_equal(same, as_read)


class _Generated:
    """A source with no files (it has no ``path``)."""

    def fingerprint(self, scan_id: str) -> str:
        return scan_id

    def load(self, scan_id: str) -> Scan:
        raise NotImplementedError


class _Broken(_Generated):
    def path(self, scan_id: str) -> Path | None:
        raise RuntimeError("cannot say")


class _Unplaced(_Generated):
    def path(self, scan_id: str) -> Path | None:
        return None


def test_scan_location_asks_only_sources_that_declare_a_location(scans):
    source, ids = scans
    assert isinstance(source, LocatedSource)
    assert scan_location(source, ids[0]) == str(source.path(ids[0]))
    assert not isinstance(_Generated(), LocatedSource)
    assert scan_location(_Generated(), "a") is None
    assert scan_location(_Broken(), "a") is None  # a failure report must not fail itself
    assert scan_location(_Unplaced(), "a") is None


def test_reading_and_extraction_share_one_scan_failure_record():
    from clear_bench import extraction
    from clear_bench.data import readers, scan

    assert extraction.ScanFailure is readers.ScanFailure is scan.ScanFailure
    assert str(scan.ScanFailure("a", "boom", "/data/a.nii.gz")) == "a (/data/a.nii.gz): boom"
    assert str(scan.ScanFailure("b", "boom")) == "b: boom"
    # An error that names its file already is not followed by the file a second time.
    named = scan.ScanFailure("c", "/data/c.nii.gz: truncated", "/data/c.nii.gz")
    assert str(named) == "c: /data/c.nii.gz: truncated"
