"""The non-learned reference encoder: per-slice HU histograms and first-order statistics.

Every leaderboard carries it as the floor a deep encoder must beat, and it calibrates the synthetic
cohort's difficulty. It reads one channel of resized Hounsfield units (``Preprocessing(input="hu")``), so
it sees intensities, not windows, and has no weights. The torch module lives in
:mod:`clear_bench.encoders.hu_reference_model`, so registering the spec imports no torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from clear_bench.specs import Encoder, EncoderSpec, Option, Preprocessing, resolve_options

# finer bins where lung, fat, soft tissue and enhancement differ; coarse ones for air and bone
HU_EDGES: tuple[float, ...] = (
    -1100, -950, -900, -850, -800, -700, -600, -500, -300, -200, -150, -100, -50, -25, 0, 25, 50, 75, 100,
    150, 200, 300, 500, 700, 1000, 1500,
)
TISSUE_RANGES: dict[str, tuple[float, float]] = {
    "air": (-2000, -950), "lung": (-950, -500), "fat": (-200, -30), "soft_tissue": (-30, 100),
    "enhanced": (100, 300), "bone": (300, 4000),
}
PERCENTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HU_SCALE = 1000.0
NAME = "hu-reference"
REFERENCE_VERSION = 1
"""Bumped when the features change (enters the embedding cache key through the encoder options)."""
SOFT_TISSUE_HU = (-200.0, 300.0)
"""Voxels inside this range give the soft-tissue statistics."""


def feature_names() -> list[str]:
    """Names of the output dimensions, in order."""
    names = [f"hist[{lo:g},{hi:g})" for lo, hi in itertools.pairwise(HU_EDGES)]
    names += ["mean", "std", *(f"p{round(q * 100)}" for q in PERCENTILES), "skewness", "kurtosis"]
    names += [f"frac_{name}" for name in TISSUE_RANGES]
    names += ["soft_mean", "soft_std", "soft_skewness", "soft_kurtosis"]
    return names


REFERENCE_OPTIONS: dict[str, Option] = {
    "image_size": Option(int, 128, "slices are resized to this square size before the histogram"),
}


def build_reference(options: Mapping[str, Any]) -> Encoder:
    from clear_bench.encoders.hu_reference_model import HUReference

    values = resolve_options(REFERENCE_OPTIONS, options)
    model = HUReference().eval()
    preprocessing = Preprocessing(image_size=int(values["image_size"]), input="hu", channels=1,
                                  mean=(0.0,), std=(1.0,))
    return Encoder(name=NAME, model=model, embed_dim=model.embed_dim, preprocessing=preprocessing,
                   weights_digest="none", label="HU histogram reference (non-learned)",
                   options={"image_size": int(values["image_size"]), "features": REFERENCE_VERSION})


def reference_encoder_spec() -> EncoderSpec:
    """The spec the core registers: name ``hu-reference``, no weights."""
    return EncoderSpec(
        name=NAME,
        build=build_reference,
        embed_dim=len(feature_names()),
        weights_source="none (non-learned)",
        description="per-slice HU histogram + first-order statistics (the floor every encoder must beat)",
        options=REFERENCE_OPTIONS,
        reference=True,
    )
