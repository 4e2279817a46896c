"""Registers the foundation-model encoders: BiomedCLIP, DINOv2, SAM2 Hiera, Merlin (and ASTRA weights)."""

from __future__ import annotations

from clear_bench import hookimpl
from clear_bench.specs import EncoderSpec


@hookimpl
def clear_bench_encoders() -> list[EncoderSpec]:
    from clear_bench_foundation.encoders import encoder_specs

    return encoder_specs()
