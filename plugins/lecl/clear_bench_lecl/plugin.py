"""Registers the LeCL encoders (ViT, MambaOut, VMamba) and the LeCL pretrainer."""

from __future__ import annotations

from clear_bench import hookimpl
from clear_bench.specs import EncoderSpec, PretrainerSpec


@hookimpl
def clear_bench_encoders() -> list[EncoderSpec]:
    from clear_bench_lecl.encoders import encoder_specs

    return encoder_specs()


@hookimpl
def clear_bench_pretrainers() -> list[PretrainerSpec]:
    from clear_bench_lecl.pretrain import pretrainer_specs

    return pretrainer_specs()
