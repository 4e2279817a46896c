"""Registers the LeCL encoders (ViT, MambaOut, VMamba), the LeCL pretrainer, the public CLEAR code's training
folder as a scan source and ``clear-bench import-checkpoint``."""

from __future__ import annotations

from clear_bench import hookimpl
from clear_bench.specs import CommandSpec, EncoderSpec, PretrainerSpec, SourceSpec


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


@hookimpl
def clear_bench_commands() -> list[CommandSpec]:
    from clear_bench_lecl.import_checkpoint import IMPORT_COMMAND

    return [IMPORT_COMMAND]
