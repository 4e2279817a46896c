"""The plugin contract: the hooks a plugin implements, each marked ``@clear_bench.hookimpl``.

A plugin is a module (an installed distribution's ``clear_bench`` entry point, a ``plugins:`` path in a
benchmark YAML, or ``--plugin PATH``) with functions of these names. Every hook takes no argument and
returns a list of specs (empty when the plugin offers none of that kind); it is called once, when the
registry is built, and must be cheap: import heavy libraries inside ``build``/``load``/``run``, not at
module level. The core's own components register through exactly these hooks
(:mod:`clear_bench.builtin`), as pytest's do. A hook that raises, or returns something that is not the
expected spec, is recorded as a plugin failure (``clear-bench plugins`` shows it) and the rest load.
"""

from __future__ import annotations

import pluggy

from clear_bench import PROJECT
from clear_bench.specs import (
    AggregatorSpec,
    CommandSpec,
    EncoderSpec,
    MetricSpec,
    PretrainerSpec,
    SourceSpec,
    TaskSpec,
)

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def clear_bench_encoders() -> list[EncoderSpec]:
    """Return the encoders this plugin offers.

    Called when the registry is built. The core calls ``spec.build(options)`` with the entry's checked
    options (defaults filled in) once per benchmark encoder entry, runs the returned
    :class:`~clear_bench.specs.Encoder`'s model frozen on batches prepared by its ``preprocessing``, and
    keys every cached embedding by its ``weights_digest``, architecture and options. ``build`` raises
    :class:`~clear_bench.errors.WeightsNotFoundError` when weights are missing: the encoder is then left
    out of the run and the boards say where the loader looked.
    """


@hookspec
def clear_bench_tasks() -> list[TaskSpec]:
    """Return the clinical endpoints this plugin offers.

    The core calls ``spec.load(options)`` once per benchmark task entry, with nested components already
    built (an option declared ``component="sources"`` arrives as a :class:`~clear_bench.specs.ScanSource`),
    and cross-validates every (encoder, head) on the returned :class:`~clear_bench.specs.TaskData` with
    one shared set of patient-level splits.
    """


@hookspec
def clear_bench_sources() -> list[SourceSpec]:
    """Return the dataset sources this plugin offers (CT folders, DICOM, generated cohorts...).

    The core builds a source when a task option names it (``source: {name: ..., <options>}``) or for
    ``clear-bench extract --source``; it reads scans lazily, one ``load(scan_id)`` at a time, in
    extraction workers, and keys the cache by ``fingerprint(scan_id)``.
    """


@hookspec
def clear_bench_aggregators() -> list[AggregatorSpec]:
    """Return the MIL heads this plugin offers.

    The core calls ``spec.build(in_dim, n_outputs, options)`` for a fresh model in every fold, trains it
    on padded bags with a mask (True = real instance) and reads its logits and per-instance attention.
    """


@hookspec
def clear_bench_metrics() -> list[MetricSpec]:
    """Return the metrics this plugin offers.

    Every registered metric that applies to a task's label type is computed per fold, with the same
    patient bootstrap as the built-in ones, and appears on that task's board and in its results.
    """


@hookspec
def clear_bench_pretrainers() -> list[PretrainerSpec]:
    """Return the encoder training procedures this plugin offers.

    The core runs ``spec.run(config, output_dir, resume=..., options=...)`` for ``clear-bench pretrain
    NAME`` (possibly under torchrun) and for a benchmark encoder with a ``pretrain:`` entry, whose
    checkpoint it keys by the recipe's content; the returned checkpoint is then built by the encoder.
    """


@hookspec
def clear_bench_commands() -> list[CommandSpec]:
    """Return the subcommands this plugin adds to ``clear-bench`` (or, with ``parent``, under one).

    Called when the command line is built; ``add_arguments`` must stay cheap (no heavy import).
    """
