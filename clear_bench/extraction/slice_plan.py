"""The slice plan that feeds an encoder: its input size, channels and kind, with the run's windows."""

from __future__ import annotations

from collections.abc import Sequence

from clear_bench.data.slices import SlicePlan
from clear_bench.specs import Encoder


def slice_plan_for(encoder: Encoder, *, windows: Sequence[str] = ("soft-tissue", "lung", "bone"),
                   window_mode: str = "per-window", slice_step: int = 1,
                   slice_spacing_mm: float | None = None, image_size: int | None = None) -> SlicePlan:
    """The slice plan that feeds ``encoder``: its size, channels and input kind, with the given windows."""
    prep = encoder.preprocessing
    return SlicePlan(windows=tuple(windows), window_mode=window_mode,  # type: ignore[arg-type]
                     slice_step=slice_step, slice_spacing_mm=slice_spacing_mm,
                     image_size=image_size or prep.image_size, channels=prep.channels, input=prep.input)
