"""The plugin contract. A plugin is a module with functions marked ``@clear_bench.hookimpl``.

Each hook returns a list of specs (empty when the plugin offers none of that kind). Plugins are found
through the ``clear_bench`` entry-point group of installed distributions, through ``plugins:`` paths in a
benchmark YAML, and through ``--plugin PATH`` on the command line. The core's own components register
through exactly these hooks (:mod:`clear_bench.builtin`).
"""

from __future__ import annotations

import pluggy

from clear_bench import PROJECT
from clear_bench.specs import AggregatorSpec, EncoderSpec, PretrainerSpec, SourceSpec, TaskSpec

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def clear_bench_encoders() -> list[EncoderSpec]:
    """Encoders that turn windowed CT slices (or volumes) into embeddings."""


@hookspec
def clear_bench_tasks() -> list[TaskSpec]:
    """Clinical endpoints: labels per scan, label type, dataset source and metric."""


@hookspec
def clear_bench_sources() -> list[SourceSpec]:
    """Dataset sources that serve scans by id (synthetic cohort, CT folders, DICOM, seed PNG layout...)."""


@hookspec
def clear_bench_aggregators() -> list[AggregatorSpec]:
    """MIL heads that pool a bag of instance embeddings into a prediction."""


@hookspec
def clear_bench_pretrainers() -> list[PretrainerSpec]:
    """Encoder training procedures, run with ``clear-bench pretrain NAME``."""
