"""The Python API: the same stages as the command line, results as pandas DataFrames.

    import clear_bench

    result = clear_bench.run("benchmarks/all.yaml")          # plan -> extract -> evaluate -> report
    tables = clear_bench.load_results(result.run_dir)        # or any run folder written before
    tables.rows.sort_values("auroc", ascending=False)        # one row per (task, encoder, head)
    encoder = clear_bench.create_encoder("lecl-vit", weights="random", arch="vit_tiny_patch16")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clear_bench.config import SECTIONS, BenchmarkConfig, ComponentRef, load_benchmark_with_plugins
from clear_bench.errors import DataError
from clear_bench.registry import Registry, load_registry
from clear_bench.schema import Problems, check_mapping
from clear_bench.specs import Encoder

if TYPE_CHECKING:
    import pandas as pd

    from clear_bench.pipeline.run import RunResult


def run(config: str | Path | BenchmarkConfig, *, plugins: Sequence[str | Path] = (),
        registry: Registry | None = None, progress: bool = False) -> RunResult:
    """Run a benchmark (a YAML path, or a loaded :class:`BenchmarkConfig` with its ``registry``)."""
    from clear_bench.pipeline.run import run_benchmark

    config, registry = _loaded(config, plugins, registry)
    return run_benchmark(config, registry, progress=progress)


def evaluate(config: str | Path | BenchmarkConfig, *, plugins: Sequence[str | Path] = (),
             registry: Registry | None = None) -> RunResult:
    """Evaluate a benchmark on the embedding cache alone: nothing is embedded or pretrained."""
    from clear_bench.pipeline.run import run_benchmark

    config, registry = _loaded(config, plugins, registry)
    return run_benchmark(config, registry, extract_missing=False, progress=False)


def evaluate_features(features: Mapping[str, str | Path], labels: str | Path, out_dir: str | Path, *,
                      aggregators: Mapping[str, Mapping[str, Any]] | Sequence[str] = ("abmil",),
                      task: str | None = None, benchmark: str = "features",
                      crossval: Mapping[str, Any] | None = None, device: str = "cpu",
                      id_column: str = "image", label_columns: Sequence[str] | None = None,
                      patient_column: str | None = None, label_type: str = "auto",
                      baselines: Sequence[str] = (), plugins: Sequence[str | Path] = ()) -> RunResult:
    """Evaluate folders of embeddings in the CLEAR layout (``{name: folder}``) on a label CSV.

    ``crossval`` takes the keys of a benchmark YAML's ``crossval`` section; ``aggregators`` are head
    names, or ``{name: options}``; ``baselines`` name folders every other row is compared with.
    """
    from clear_bench.evaluation.inputs import read_label_csv
    from clear_bench.pipeline.evaluate import EvaluationProtocol
    from clear_bench.pipeline.features import evaluate_features as evaluate_folders
    from clear_bench.pipeline.plan import PlannedHead

    registry = load_registry(plugins)
    section = crossval_settings(crossval or {}, source="crossval")
    protocol = EvaluationProtocol.from_crossval(section, device)
    named = aggregators.items() if isinstance(aggregators, Mapping) else ((name, {}) for name in aggregators)
    heads = [PlannedHead(ComponentRef(name, name, dict(options)), registry.aggregator(name))
             for name, options in named]
    table = read_label_csv(labels, id_column, label_type, label_columns, patient_column)
    return evaluate_folders([(name, Path(folder)) for name, folder in features.items()], table, heads,
                            protocol, registry.metrics_for(table.label_type), Path(out_dir),
                            task_id=task or Path(labels).stem, benchmark=benchmark, baselines=baselines)


def crossval_settings(values: Mapping[str, Any], *, source: str = "crossval"):
    """A :class:`~clear_bench.config.CrossValConfig` from ``crossval`` keys, checked by the schema."""
    from clear_bench.config import CrossValConfig

    problems = Problems(source)
    checked = check_mapping(dict(values), SECTIONS["crossval"], "crossval", problems)
    problems.raise_if_any()
    return CrossValConfig(**checked)


def create_encoder(name: str, *, plugins: Sequence[str | Path] = (), registry: Registry | None = None,
                   **options: Any) -> Encoder:
    """Build a registered encoder by name with its options, as a benchmark entry would (timm-style)."""
    from clear_bench.components import build_encoder

    registry = registry or load_registry(plugins)
    spec = registry.encoder(name)
    problems = Problems(f"create_encoder('{name}')")
    checked = check_mapping(options, spec.options, "", problems, defaults=False)
    problems.raise_if_any()
    return build_encoder(spec, checked)


@dataclass
class Results:
    """A run folder's results as DataFrames.

    - ``rows``: one row per (task, encoder, aggregator): the macro mean of every metric with its
      bootstrap CI (``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high``), the weights, the
      permutation null (``null_mean``, ``null_low``, ``null_high``, ``permutation_p``) and the cost
      (``embed_dim``, ``encoder_parameters``, ``gflops`` per ``gflops_per`` input, ``throughput`` in inputs
      per second on ``throughput_device``, ``head_parameters``, ``cv_seconds``);
    - ``metrics``: every metric per label and macro (mean, std, CI, folds where defined);
    - ``comparisons``: the board's paired comparisons;
    - ``predictions``: out-of-fold probabilities, one row per (cell, scan, label).
    """

    rows: pd.DataFrame
    metrics: pd.DataFrame
    comparisons: pd.DataFrame
    predictions: pd.DataFrame
    manifest: dict[str, Any]


def load_results(run_dir: str | Path) -> Results:
    """Read the results a run (or ``evaluate``) wrote under ``run_dir``."""
    import pandas as pd

    run_dir = Path(run_dir)
    manifest_path = run_dir / "run.json"
    if not manifest_path.is_file():
        raise DataError(f"{run_dir}: no run.json (not a clear-bench run folder, or the run has not finished)")
    manifest = json.loads(manifest_path.read_text())
    rows, metrics, comparisons, predictions = [], [], [], []
    for index_path in sorted(run_dir.glob("tasks/*/results/cells.json")):
        index = json.loads(index_path.read_text())
        task = index["task"]
        for cell in index["cells"]:
            key = {"task": task, "encoder": cell["encoder"], "aggregator": cell["aggregator"]}
            summary = json.loads((index_path.parent / cell["summary"]).read_text())
            null = cell.get("null") or {}
            compute = cell.get("compute") or {}
            row = {**key, "weights": cell["weights"], "reference": bool(cell.get("reference")),
                   "null_mean": null.get("mean"),
                   "null_low": null.get("low"), "null_high": null.get("high"),
                   "permutation_p": null.get("p_value"), "n_scans": index["n_scans"],
                   "level": index["level"], "split_fingerprint": index["split_fingerprint"],
                   "embed_dim": compute.get("embed_dim"), "encoder_parameters": compute.get("parameters"),
                   "gflops": compute.get("gflops"),
                   "gflops_per": compute.get("per") if compute.get("gflops") is not None else None,
                   "throughput": compute.get("throughput"),
                   "throughput_device": compute.get("device") or None,
                   "throughput_measured": compute.get("measured", "extraction")
                   if compute.get("throughput") is not None else None,
                   "head_parameters": cell.get("head_parameters"), "cv_seconds": cell.get("cv_seconds")}
            for metric in summary["metrics"]:
                metrics.append({**key, **{k: metric[k] for k in ("metric", "label", "mean", "std", "ci_low",
                                                                  "ci_high", "n_folds")}})
                if metric["label"] == "macro":
                    name = metric["metric"]
                    row |= {name: metric["mean"], f"{name}_ci_low": metric["ci_low"],
                            f"{name}_ci_high": metric["ci_high"]}
            rows.append(row)
            frame = pd.read_csv(index_path.parent / cell["predictions"])
            long = frame.melt(id_vars=["scan_id", "repeat", "fold"], var_name="label",
                              value_name="probability")
            long["label"] = long["label"].str.removeprefix("p_")
            predictions.append(long.assign(**key))
        for comparison in json.loads((index_path.parent / "comparisons.json").read_text()):
            comparisons.append({"task": task, **{k: v for k, v in comparison.items() if k != "delong"}})
    return Results(pd.DataFrame(rows), pd.DataFrame(metrics), pd.DataFrame(comparisons),
                   pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(), manifest)


def _loaded(config: str | Path | BenchmarkConfig, plugins: Sequence[str | Path],
            registry: Registry | None) -> tuple[BenchmarkConfig, Registry]:
    if isinstance(config, BenchmarkConfig):
        return config, registry or load_registry([*config.plugins, *plugins])
    return load_benchmark_with_plugins(config, plugins)
