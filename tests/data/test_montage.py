"""PNG montages of windowed slices with lesion boxes."""

import numpy as np
from PIL import Image

from clear_bench.data.montage import pick_slices, write_montage
from clear_bench.data.scan import Scan
from clear_bench.specs import LesionBox


def test_montage_draws_windows_and_boxes(tmp_path):
    volume = np.full((8, 32, 32), -1000.0, np.float32)
    volume[:, 6:26, 4:28] = 40.0
    volume[5, 10:16, 10:16] = 200.0
    scan = Scan("demo", volume, (5.0, 1.0, 1.0), lesions=[LesionBox(5, 10, 10, 16, 16, "liver")])
    assert 5 in pick_slices(scan, count=4)
    out = write_montage(scan, tmp_path / "sub" / "m.png", windows=("soft-tissue", "W1500L-600"), columns=4)
    with Image.open(out) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    assert rgb.shape[0] > 100 and rgb.shape[1] > 100
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 170) & (rgb[..., 2] < 80)
    assert yellow.sum() > 20  # the lesion box
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temporary file left behind


def test_montage_of_prewindowed_scan(tmp_path):
    scan = Scan("pre", np.random.default_rng(0).random((3, 16, 16), dtype=np.float32), prewindowed=True)
    out = write_montage(scan, tmp_path / "p.png")
    assert out.stat().st_size > 1000
