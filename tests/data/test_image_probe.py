"""The image-space filter probe: no weights, and features that say where a blob of lesion size is."""

from __future__ import annotations

import numpy as np
import torch

from clear_bench import create_encoder
from clear_bench.encoders.image_probe import feature_count


def _disc(size: int, cy: int, cx: int, radius: float, value: float) -> torch.Tensor:
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), 0.3, np.float32)
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = value
    return torch.from_numpy(image)[None, None]


def test_probe_is_weightless_and_registered() -> None:
    encoder = create_encoder("image-probe")
    assert encoder.weights_digest == "none" and not list(encoder.model.parameters())
    assert encoder.preprocessing.input == "windowed" and encoder.preprocessing.channels == 1
    out = encoder.model(torch.rand(3, 1, 112, 112))
    assert out.shape == (3, feature_count(4)) == (3, encoder.embed_dim)
    again = create_encoder("image-probe").model(torch.rand(3, 1, 112, 112))
    assert again.shape == out.shape


def test_a_bright_blob_lights_its_own_grid_cell() -> None:
    model = create_encoder("image-probe").model
    grid, scales = 4, 3
    blank = model(_disc(112, 0, 0, 0, 0.3))
    bright = model(_disc(112, 14, 98, 7, 0.9))  # a 14 px disc in the top-right cell (row 0, column 3)
    dark = model(_disc(112, 98, 14, 7, 0.0))  # a dark disc in the bottom-left cell (row 3, column 0)
    cells = grid * grid
    maxima = slice(2 * cells, (2 + 2 * scales) * cells)  # per scale: bright then dark maps, each 16 cells
    for features, polarity, cell in ((bright, 0, 3), (dark, 1, 12)):
        blob = (features - blank)[0, maxima].view(scales, 2, cells)
        assert blob[:, polarity].max() > 0.05
        assert int(blob[:, polarity].amax(0).argmax()) == cell
        assert blob[:, 1 - polarity].amax() < blob[:, polarity].amax() / 2
    # the mean intensity of the cell moves with the disc, the other cells stay at the background
    assert bright[0, 3] > blank[0, 3] + 0.05 and torch.allclose(bright[0, 4:16], blank[0, 4:16], atol=1e-6)
