"""Hooks of the CT tasks plugin: dataset sources and clinical tasks."""

from __future__ import annotations

from clear_bench import hookimpl
from clear_bench.specs import SourceSpec, TaskSpec


@hookimpl
def clear_bench_sources() -> list[SourceSpec]:
    from clear_bench_ct_tasks.sources import SOURCE_SPECS

    return list(SOURCE_SPECS.values())


@hookimpl
def clear_bench_tasks() -> list[TaskSpec]:
    from clear_bench_ct_tasks.tasks import TASK_SPECS

    return list(TASK_SPECS)
