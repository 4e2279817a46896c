"""Hooks of the CT tasks plugin: dataset sources, clinical tasks and ``clear-bench data cohort``.

Each hook imports its module when called, so loading the plugin stays cheap.
"""

from __future__ import annotations

from clear_bench import hookimpl
from clear_bench.specs import CommandSpec, SourceSpec, TaskSpec


@hookimpl
def clear_bench_sources() -> list[SourceSpec]:
    from clear_bench_ct_tasks.sources import source_specs

    return source_specs()


@hookimpl
def clear_bench_tasks() -> list[TaskSpec]:
    from clear_bench_ct_tasks.tasks import TASK_SPECS

    return list(TASK_SPECS)


@hookimpl
def clear_bench_commands() -> list[CommandSpec]:
    from clear_bench_ct_tasks.cohort import COHORT_COMMAND

    return [COHORT_COMMAND]
