"""Registers the LeCL encoders (ViT, MambaOut, VMamba), the LeCL pretrainer and the public CLEAR code's training
folder as a scan source."""

from __future__ import annotations

from clear_bench import hookimpl
from clear_bench.specs import EncoderSpec, PretrainerSpec, SourceSpec


@hookimpl
def clear_bench_encoders() -> list[EncoderSpec]:
    from clear_bench_lecl.encoders import encoder_specs

    return encoder_specs()


@hookimpl
def clear_bench_pretrainers() -> list[PretrainerSpec]:
    from clear_bench_lecl.pretrain import pretrainer_specs

    return pretrainer_specs()


@hookimpl
def clear_bench_sources() -> list[SourceSpec]:
    from clear_bench_lecl.pretrain.seed_layout import SOURCE_SPEC

    return [SOURCE_SPEC]

