"""The non-learned image-space reference: fixed blob and edge filters pooled over a coarse grid.

The HU reference sees intensities, not structure; this one sees the windowed slice an image encoder sees
(``Preprocessing(input="windowed")``, one grey channel per window) and answers where on the slice there
is a bright or dark blob of lesion size, and how much edge there is. Every filter is a fixed
difference-of-Gaussians or finite-difference kernel, so it has no weights: on a board it says what the
image holds at the encoder's input scale without any learning, a second floor beside the HU reference.
The torch module lives in :mod:`clear_bench.encoders.image_probe_model` (registering imports no torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clear_bench.specs import Encoder, EncoderSpec, Option, Preprocessing, resolve_options

NAME = "image-probe"
PROBE_VERSION = 1
"""Bumped when the features change (enters the embedding cache key through the encoder options)."""
SIGMAS_AT_112 = (1.5, 3.0, 6.0)
"""Inner Gaussian widths (pixels at 112 px; scaled with the image) of the blob filters, outer = 2x inner:
blobs of about 4-8, 8-16 and 16-32 px across (14-110 mm at the default cohort's 3.4 mm pixels)."""


def feature_count(grid: int) -> int:
    """Output size: per grid cell the mean intensity, the edge energy, and per blob scale and polarity
    (bright, dark) the cell's maximum and mean response."""
    return grid * grid * (2 + 4 * len(SIGMAS_AT_112))


PROBE_OPTIONS: dict[str, Option] = {
    "image_size": Option(int, 112, "slices are windowed and resized to this square size"),
    "grid": Option(int, 4, "responses are pooled over a grid x grid partition of the slice"),
}


def build_probe(options: Mapping[str, Any]) -> Encoder:
    """The probe for ``options`` (``image_size``, ``grid``)."""
    from clear_bench.encoders.image_probe_model import ImageProbe

    values = resolve_options(PROBE_OPTIONS, options)
    size, grid = int(values["image_size"]), int(values["grid"])
    model = ImageProbe(size, grid).eval()
    preprocessing = Preprocessing(image_size=size, input="windowed", channels=1, mean=(0.0,), std=(1.0,))
    return Encoder(
        name=NAME,
        model=model,
        embed_dim=model.embed_dim,
        preprocessing=preprocessing,
        weights_digest="none",
        label="image-space filter probe (non-learned)",
        options={"image_size": size, "grid": grid, "features": PROBE_VERSION},
    )


def probe_encoder_spec() -> EncoderSpec:
    """The spec the core registers: name ``image-probe``, no weights. It is not a declared reference (a
    benchmark lists it to put it on its boards), so rows are not tested against it and a benchmark that
    leaves it out is unchanged."""
    return EncoderSpec(
        name=NAME,
        build=build_probe,
        embed_dim=feature_count(int(PROBE_OPTIONS["grid"].default)),
        weights_source="none (non-learned)",
        description="fixed multi-scale blob (DoG) and edge filters of the windowed slice, pooled on a grid "
        "(the image-space floor)",
        options=PROBE_OPTIONS,
    )
