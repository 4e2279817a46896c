"""Building a registered encoder with its recorded options, and the slice plan that feeds it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clear_bench.data.slices import SlicePlan
from clear_bench.specs import Encoder, EncoderSpec, resolve_options


def build_encoder(spec: EncoderSpec, options: Mapping[str, Any] | None = None) -> Encoder:
    """Build a registered encoder; its options (bar weight paths) are recorded for the cache key."""
    values = resolve_options(spec.options, options)
    encoder = spec.build(values)
    if not encoder.options:
        encoder.options = {k: v for k, v in values.items()
                           if not (k in spec.options and spec.options[k].type is Path)}
    return encoder


def slice_plan_for(encoder: Encoder, *, windows: Sequence[str] = ("soft-tissue", "lung", "bone"),
                   window_mode: str = "per-window", slice_step: int = 1,
                   slice_spacing_mm: float | None = None, image_size: int | None = None) -> SlicePlan:
    """The slice plan that feeds ``encoder``: its size, channels and input kind, with the given windows."""
    prep = encoder.preprocessing
    return SlicePlan(windows=tuple(windows), window_mode=window_mode,  # type: ignore[arg-type]
                     slice_step=slice_step, slice_spacing_mm=slice_spacing_mm,
                     image_size=image_size or prep.image_size, channels=prep.channels, input=prep.input)
