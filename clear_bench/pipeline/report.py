"""Stage 4, report: boards, per-cell results, comparisons and the run manifest, written atomically.

Layout of a run folder (``load_results`` reads it back)::

    run.json                                  what ran and how (the manifest), what the boards state
    tasks/<task>/results/cells.json           one entry per (encoder, head): files, weights, null, cost,
                                              fold keys (the folds live in tasks/<task>/folds/<key>.npz)
    tasks/<task>/results/<row>.json           the row's summary (every metric, per label and macro)
    tasks/<task>/results/<row>.predictions.csv  out-of-fold probabilities
    tasks/<task>/results/comparisons.json     the declared comparisons of the board
    tasks/<task>/results/pairs.json           the all-pairs matrix (exploratory, Holm over the matrix)
    tasks/<task>/results/labels.json          the labels of the task's scans (targets of the plots)
    tasks/<task>/results/attention.json       the scans of the attention plot, with their lesion slices
    plots/<kind>-<key>.png                    every plot drawn, by the hash of what it draws (a rerun whose
                                              results did not change reads them instead of drawing)
    leaderboards/<task>.md, overall.md        the boards (also written to the benchmark's leaderboard_dir),
                                              beside them every table as CSV and JSON and the plots (PNG)

The boards and plots are rendered from those stored files alone (:func:`render_boards`, also
``clear-bench leaderboard RUN_DIR``), so a run folder regenerates them byte for byte.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import logging
import math
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clear_bench import __version__
from clear_bench.atomic import atomic_write_bytes, atomic_write_text
from clear_bench.errors import DataError
from clear_bench.evaluation.bootstrap import Summary
from clear_bench.evaluation.compare import PairedComparison
from clear_bench.evaluation.crossval import CrossValResult, load_fold
from clear_bench.evaluation.reliability import reliability_figure
from clear_bench.evaluation.transfer import TransferBoard
from clear_bench.evaluation.tuning import head_options
from clear_bench.leaderboard import (
    EfficiencyPoint,
    EncoderCompute,
    NullSummary,
    Row,
    SiteHeldOut,
    TaskBoard,
    efficiency_area,
    overall_standing,
    overall_tables,
    ranked,
    render_overall_board,
    render_task_board,
    render_transfer_board,
    task_tables,
    transfer_table,
)
from clear_bench.naming import safe_filename
from clear_bench.pipeline.evaluate import TaskResult
from clear_bench.pipeline.statistics import json_finite as _finite
from clear_bench.pipeline.transfer import transfer_folder
from clear_bench.plots import AttentionTrace, ForestRow, RowFolds, attention_figure, forest_figure, roc_figure
from clear_bench.plots.cache import PlotCache
from clear_bench.plots.efficiency import efficiency_figure
from clear_bench.plots.ranks import rank_heatmap
from clear_bench.plots.style import DPI, GRID_DPI
from clear_bench.specs import AggregatorSpec

log = logging.getLogger(__name__)

RESULTS_FORMAT = 1
PROVENANCE_PACKAGES = ("torch", "timm", "open_clip_torch", "numpy", "scipy", "scikit-learn", "pandas", "h5py",
                       "matplotlib")
"""Third-party packages whose versions a board states (with every clear_bench plugin distribution)."""


def provenance(outputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Where results come from: the git commit of the clear-bench checkout (``dirty`` when tracked files
    differ from it, leaving out the folders ``outputs`` a run writes its boards to; ``unknown`` outside a
    checkout), Python, and the versions of the core, of every distribution offering ``clear_bench``
    plugins and of :data:`PROVENANCE_PACKAGES`."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    top = Path(git("rev-parse", "--show-toplevel") or here)
    excluded = [f":(exclude){folder.resolve()}" for folder in map(Path, outputs)
                if folder.resolve().is_relative_to(top)]
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", str(top), *excluded)) \
        if commit else False
    packages = {"clear-bench": __version__}
    for entry_point in importlib.metadata.entry_points(group="clear_bench"):
        if entry_point.dist is not None:
            packages[entry_point.dist.name] = entry_point.dist.version
    for name in PROVENANCE_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"commit": commit or "unknown", "dirty": dirty, "python": platform.python_version(),
            "packages": dict(sorted(packages.items()))}


def provenance_line(info: dict[str, Any]) -> str:
    """One markdown sentence of :func:`provenance` for the boards."""
    commit = f"commit `{info['commit'][:12]}`" + (" with uncommitted changes" if info["dirty"] else "")
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    return f"Produced from {commit}; Python {info['python']}, {packages}."


@dataclass
class AttentionScans:
    """The test scans whose attention a task's plot shows, and their lesion slices (when the source has
    lesion boxes; ``None`` when it cannot say)."""

    scan_ids: list[str]
    lesion_slices: dict[str, list[int] | None] = field(default_factory=dict)


ATTENTION_SCANS = 3
"""Test scans per task whose attention along the slice axis is plotted for every row."""


def choose_attention_scans(labels: Mapping[str, np.ndarray], label_type: str,
                           count: int = ATTENTION_SCANS) -> list[str]:
    """The scans of a task's attention plot: the first scans (by id) with a positive label (a class above
    the first, for multi-class), and the first without one."""
    def positive(scan_id: str) -> bool:
        label = np.asarray(labels[scan_id]).reshape(-1)
        return bool(label[0] > 0) if label_type == "multiclass" else bool(label.any())

    ids = sorted(labels)
    chosen = [i for i in ids if positive(i)][:max(count - 1, 1)] + [i for i in ids if not positive(i)][:1]
    chosen += [i for i in ids if i not in chosen][:count - len(chosen)]
    return sorted(chosen[:count])


def fill_costs(result: TaskResult, encoders: Mapping[str, EncoderCompute],
               heads: Mapping[str, AggregatorSpec], references: Sequence[str] = ()) -> None:
    """Put on every row of ``result`` what it costs and whether its encoder is a reference: the encoder's
    compute (``encoders``: by row label), the head's parameters (built on the meta device from
    ``heads``: by aggregator name) and the cross-validation time of its folds."""
    floors = {c.reference for c in result.board.comparisons if c.kind == "floor"}
    for cell in result.cells:
        row = cell.row
        row.compute = encoders.get(row.encoder, row.compute)
        row.reference = row.reference or row.encoder in references or row.name in floors
        row.cv_seconds = float(sum(fold.seconds for run in cell.results for fold in run.folds))
        spec = heads.get(cell.result.aggregator)
        dim = row.compute.embed_dim if row.compute else None
        if spec is not None and dim:
            chosen = [head_options(fold.settings) for fold in cell.result.folds if fold.settings]
            # a tuned row: the head its folds chose most often
            options = {**cell.result.options, **(max(chosen, key=chosen.count) if chosen else {})}
            row.head_parameters = head_parameters(spec, dim, len(cell.result.label_names), options)


def head_parameters(spec: AggregatorSpec, dim: int, n_outputs: int, options: Mapping[str, Any]) -> int | None:
    """Trainable parameters of the head ``spec`` builds for ``dim``-d instances (on the meta device)."""
    import torch

    if spec.fit is not None:  # a closed-form probe builds no module
        return None
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            model = spec.build(dim, n_outputs, dict(options))
    except Exception as error:  # a head that cannot be built on meta: the figure is left out
        log.info("head %s: parameters not counted (%s)", spec.name, error)
        return None
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def write_report(results: Sequence[TaskResult], *, benchmark: str, run_dir: Path,
                 leaderboard_dirs: Sequence[Path] = (), left_out: Sequence[str] = (),
                 manifest: dict[str, Any] | None = None,
                 attention: Mapping[str, AttentionScans] | None = None,
                 encoders: Mapping[str, EncoderCompute] | None = None,
                 heads: Mapping[str, AggregatorSpec] | None = None, references: Sequence[str] = (),
                 transfers: Sequence[TransferBoard] = ()) -> list[Path]:
    """Write every task's results and ``run.json``, then the boards and plots from those stored results
    alone (as ``clear-bench leaderboard`` does); returns the boards written.

    ``attention``: the scans of each task's attention plot (default: :func:`choose_attention_scans`, no
    lesion marks); ``encoders``, ``heads``, ``references``: see :func:`fill_costs`; ``transfers``: the
    train-on-A, test-on-B boards, stored under ``transfer/<A>-to-<B>/board.json``."""
    for result in results:
        fill_costs(result, encoders or {}, heads or {}, references)
        shown = (attention or {}).get(result.board.task)
        if shown is None and result.cells:
            labels = result.cells[0].result.labels
            shown = AttentionScans(choose_attention_scans(labels, result.board.label_type))
        write_task_results(result, shown)
    for board in transfers:
        atomic_write_text(transfer_folder(run_dir, board.name) / "board.json",
                          json.dumps(_finite(board.to_dict()), indent=1, sort_keys=True))
    if transfers:
        manifest = {**(manifest or {}), "transfers_evaluated": [board.name for board in transfers]}
    folders = sorted({run_dir / "leaderboards", *leaderboard_dirs})
    write_manifest(run_dir, benchmark=benchmark, results=results, left_out=left_out, manifest=manifest,
                   origin=provenance(folders))
    return render_boards(run_dir, folders)


def write_manifest(run_dir: Path, *, benchmark: str, results: Sequence[TaskResult], left_out: Sequence[str],
                   manifest: Mapping[str, Any] | None, origin: Mapping[str, Any]) -> Path:
    """``run.json``: what ran, where it came from, and what the boards need besides the task results."""
    body = {"benchmark": benchmark, "clear_bench_version": __version__, "results_format": RESULTS_FORMAT,
            "provenance": dict(origin), **(manifest or {}),
            "tasks_evaluated": [r.board.task for r in results], "encoders_left_out": list(left_out)}
    return atomic_write_text(run_dir / "run.json", json.dumps(_finite(body), indent=1, sort_keys=True,
                                                              default=str))


def write_task_results(result: TaskResult, attention: AttentionScans | None = None) -> None:
    """Every cell's summary JSON and predictions CSV, the cell index (with every cell's cost and fold
    keys), the comparisons, the all-pairs matrix, the scans' labels and the scans of the attention plot
    of one task: everything :func:`load_boards` needs."""
    folder = result.task_dir / "results"
    index = []
    for cell in result.cells:
        stem = safe_filename(cell.row.name)
        summary = json.dumps(cell.summary.to_dict(), indent=1, sort_keys=True)
        atomic_write_text(folder / f"{stem}.json", summary)
        atomic_write_text(folder / f"{stem}.predictions.csv", predictions_csv(cell.results))
        row = cell.row
        null = asdict(row.null) if row.null else None
        index.append({"encoder": row.encoder, "aggregator": row.aggregator,
                      "weights": row.weights, "null": null, "reference": row.reference,
                      "compute": row.compute.to_dict() if row.compute else None,
                      "head_parameters": row.head_parameters, "cv_seconds": row.cv_seconds,
                      "efficiency": [asdict(point) for point in row.efficiency],
                      "site_held_out": asdict(row.site_held_out) if row.site_held_out else None,
                      "site_shortcut": row.site_shortcut, **({"tuned": row.tuned} if row.tuned else {}),
                      "folds": [[fold.key for fold in run.folds] for run in cell.results],
                      "summary": f"{stem}.json", "predictions": f"{stem}.predictions.csv"})
    board = result.board
    atomic_write_text(folder / "cells.json", json.dumps(_finite({
        "task": board.task, "label_type": board.label_type, "label_names": board.label_names,
        "n_scans": board.n_scans, "n_folds": board.n_folds, "metric": board.metric, "level": board.level,
        "repeats": board.repeats, "permutations": board.permutations, "null_heads": board.null_heads,
        "fraction_draws": board.fraction_draws, "sites": board.sites,
        **({"tuning": board.tuning} if board.tuning else {}),
        "extra_metrics": [list(m) for m in board.extra_metrics],
        "split_fingerprint": board.split_fingerprint(), "excluded": board.excluded, "cells": index,
        **({"scan_notes": board.scan_notes} if board.scan_notes else {}),
    }), indent=1, sort_keys=True))
    comparisons = [asdict(c) for c in board.comparisons]
    atomic_write_text(folder / "comparisons.json", json.dumps(_finite(comparisons), indent=1, sort_keys=True))
    pairs = [asdict(c) for c in board.pairs]
    atomic_write_text(folder / "pairs.json", json.dumps(_finite(pairs), indent=1, sort_keys=True))
    labels = result.cells[0].result.labels if result.cells else {}
    atomic_write_text(folder / "labels.json", json.dumps(
        {i: np.asarray(v).reshape(-1).tolist() for i, v in sorted(labels.items())}, sort_keys=True))
    shown = {"scan_ids": list(attention.scan_ids), "lesion_slices": attention.lesion_slices} if attention \
        else {"scan_ids": [], "lesion_slices": {}}
    atomic_write_text(folder / "attention.json", json.dumps(shown, indent=1, sort_keys=True))


@dataclass
class StoredTask:
    """One task's board rebuilt from a run folder, with what its plots read."""

    board: TaskBoard
    rows: dict[str, RowFolds]
    """The first repeat's folds of every row, by row name."""
    attention: AttentionScans


def load_task(results_dir: Path, left_out: Sequence[str] = ()) -> StoredTask:
    """Rebuild one task's :class:`TaskBoard` and plot data from ``tasks/<task>/results``."""
    def read(name: str) -> Any:
        path = results_dir / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: missing (this run folder was written by an older clear-bench, or the "
                            "run has not finished); rerun the benchmark to write it") from None
        except ValueError as error:
            raise DataError(f"{path}: not valid JSON ({error})") from None

    index = read("cells.json")
    labels = {i: np.asarray(v) for i, v in read("labels.json").items()}
    folds_dir = results_dir.parent / "folds"
    rows, plots = [], {}
    for cell in index["cells"]:
        null = NullSummary(**{k: (math.nan if v is None else v) for k, v in cell["null"].items()}) \
            if cell.get("null") else None
        if null is not None:
            null.values = [math.nan if v is None else v for v in null.values]
        compute = EncoderCompute.from_dict(cell["compute"]) if cell.get("compute") else None
        cv_seconds = cell.get("cv_seconds")
        row = Row(cell["encoder"], cell["aggregator"], Summary.from_dict(read(cell["summary"])),
                  cell.get("weights", ""), null, bool(cell.get("reference")), compute,
                  cell.get("head_parameters"), math.nan if cv_seconds is None else float(cv_seconds))
        row.efficiency = [EfficiencyPoint(**point) for point in cell.get("efficiency") or []]
        held = cell.get("site_held_out")
        row.site_held_out = SiteHeldOut(
            *(math.nan if held[k] is None else held[k] for k in ("mean", "ci_low", "ci_high")),
            {site: math.nan if v is None else v for site, v in held["per_site"].items()}) if held else None
        row.site_shortcut = math.nan if cell.get("site_shortcut") is None else float(cell["site_shortcut"])
        row.tuned = {str(k): int(v) for k, v in (cell.get("tuned") or {}).items()}
        rows.append(row)
        keys = cell.get("folds") or [[]]
        missing = [key for key in keys[0] if not (folds_dir / f"{key}.npz").is_file()]
        if missing:
            raise DataError(f"{folds_dir}: fold results of '{row.name}' are missing ({', '.join(missing)})")
        plots[row.name] = RowFolds(index["label_type"], list(index["label_names"]), labels,
                                   [load_fold(folds_dir / f"{key}.npz") for key in keys[0]])
    board = TaskBoard(index["task"], index["label_type"], list(index["label_names"]), int(index["n_scans"]),
                      int(index["n_folds"]), rows,
                      [PairedComparison.from_dict(c) for c in read("comparisons.json")],
                      list(index["excluded"]), metric=index["metric"],
                      extra_metrics=[tuple(m) for m in index.get("extra_metrics", [])], level=index["level"],
                      repeats=int(index["repeats"]), permutations=int(index["permutations"]),
                      null_heads=list(index["null_heads"]),
                      pairs=[PairedComparison.from_dict(c) for c in read("pairs.json")],
                      left_out_encoders=list(left_out), fraction_draws=int(index.get("fraction_draws", 0)),
                      sites=list(index.get("sites", [])), tuning=dict(index.get("tuning") or {}),
                      scan_notes={k: list(v) for k, v in index.get("scan_notes", {}).items()})
    shown = read("attention.json")
    return StoredTask(board, plots, AttentionScans(list(shown["scan_ids"]), dict(shown["lesion_slices"])))


def load_boards(run_dir: Path) -> tuple[dict[str, Any], list[StoredTask]]:
    """``run.json`` and every evaluated task of the run folder, rebuilt from its stored results."""
    manifest_path = run_dir / "run.json"
    if not manifest_path.is_file():
        raise DataError(f"{run_dir}: no run.json (not a clear-bench run folder, or the run has not finished)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as error:
        raise DataError(f"{manifest_path}: not valid JSON ({error})") from None
    for key in ("benchmark", "tasks_evaluated", "provenance"):
        if key not in manifest:
            raise DataError(f"{manifest_path}: no '{key}' (written by an older clear-bench; rerun the "
                            "benchmark)")
    left_out = manifest.get("encoders_left_out", [])
    tasks = [load_task(run_dir / "tasks" / safe_filename(task) / "results", left_out)
             for task in manifest["tasks_evaluated"]]
    return manifest, tasks


def render_boards(run_dir: Path, folders: Sequence[Path]) -> list[Path]:
    """Write every board, table and plot of the run folder into each of ``folders``, from the stored
    results alone; returns the boards written. The same stored results give the same bytes."""
    manifest, tasks = load_boards(run_dir)
    plots = PlotCache(run_dir / "plots")
    benchmark, version = manifest["benchmark"], manifest.get("clear_bench_version", __version__)
    line = provenance_line(manifest["provenance"])
    left_out = manifest.get("encoders_left_out", [])
    files: dict[str, bytes] = {}
    for task in tasks:
        files.update(task_files(task, benchmark=benchmark, version=version, provenance=line, plots=plots))
    for name in manifest.get("transfers_evaluated", []):
        files.update(transfer_files(load_transfer(run_dir, name), benchmark=benchmark, version=version,
                                    provenance=line))
    boards = [task.board for task in tasks]
    if boards:
        files.update(overall_files(boards, benchmark=benchmark, version=version, provenance=line,
                                   left_out=left_out, plots=plots))
    plots.prune()
    log.info("plots: %d drawn, %d unchanged since the last rendering", plots.drawn, plots.reused)
    written = []
    for folder in folders:
        for name, data in files.items():
            path = atomic_write_bytes(Path(folder) / name, data)
            if name.endswith(".md"):
                written.append(path)
    return sorted(written)


def load_transfer(run_dir: Path, name: str) -> TransferBoard:
    """A transfer board stored by :func:`write_report`."""
    path = transfer_folder(run_dir, name) / "board.json"
    try:
        return TransferBoard.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise DataError(f"{path}: missing (the run has not finished); rerun the benchmark") from None
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a transfer board ({error})") from None


def transfer_files(board: TransferBoard, *, benchmark: str, version: str,
                   provenance: str) -> dict[str, bytes]:
    """``<A>-to-<B>.transfer.md`` with its table as CSV and JSON."""
    stem = f"{safe_filename(board.name)}.transfer"
    records = transfer_table(board)
    return {f"{stem}.md": render_transfer_board(board, benchmark=benchmark, version=version,
                                                provenance=provenance).encode(),
            f"{stem}.csv": records_csv(records).encode(),
            f"{stem}.json": (json.dumps(_finite({"transfer": records}), indent=1) + "\n").encode()}


TABLE_FILES = {"leaderboard": "", "compute": ".compute", "comparisons": ".comparisons",
               "auroc_per_label": ".auroc-per-label", "scans_left_out": ".scans-left-out",
               "overall": "", "encoders_left_out": ".encoders-left-out",
               "label_efficiency": ".label-efficiency", "site_held_out": ".site-held-out",
               "scan_notes": ".scan-notes"}
"""The CSV of each table beside a board: ``<board><suffix>.csv``."""


def _table_files(stem: str, tables: Mapping[str, list[dict[str, Any]]]) -> dict[str, bytes]:
    files = {f"{stem}.json": (json.dumps(_finite(dict(tables)), indent=1) + "\n").encode()}
    for name, records in tables.items():
        csv_text = records_csv(records, EMPTY_TABLE_COLUMNS.get(name, ()))
        files[f"{stem}{TABLE_FILES[name]}.csv"] = csv_text.encode()
    return files


def task_files(task: StoredTask, *, benchmark: str, version: str, provenance: str,
               plots: PlotCache | None = None) -> dict[str, bytes]:
    """Every file beside one task's board, by file name: the board, its tables, the all-pairs matrix and
    the plots (drawn, or read back from ``plots``)."""
    board = task.board
    stem = safe_filename(board.task)
    tables = task_tables(board)
    files = _table_files(stem, tables)
    files[f"{stem}.pairs.csv"] = pairs_csv(board.pairs).encode()
    board.files = {"tables (JSON)": f"{stem}.json", "table (CSV)": f"{stem}.csv",
                   "compute (CSV)": f"{stem}.compute.csv", "comparisons (CSV)": f"{stem}.comparisons.csv",
                   "AUROC per label (CSV)": f"{stem}.auroc-per-label.csv",
                   "all-pairs matrix": f"{stem}.pairs.csv"}
    if "label_efficiency" in tables:
        board.files["label efficiency (CSV)"] = f"{stem}.label-efficiency.csv"
    if "site_held_out" in tables:
        board.files["site held out (CSV)"] = f"{stem}.site-held-out.csv"
    if "scan_notes" in tables:
        board.files["scan notes (CSV)"] = f"{stem}.scan-notes.csv"
    board.figures = {}
    for title, suffix, data in task_plots(task, plots or PlotCache(None)):
        files[f"{stem}.{suffix}.png"] = data
        board.figures[title] = f"{stem}.{suffix}.png"
    files[f"{stem}.md"] = render_task_board(board, benchmark=benchmark, version=version,
                                            provenance=provenance).encode()
    return files


def task_plots(task: StoredTask, plots: PlotCache) -> list[tuple[str, str, bytes]]:
    """``(title, file suffix, PNG bytes)`` of every plot of one task board."""
    board = task.board
    if not board.rows:
        return []
    rows = ranked(board.rows, board.metric)
    forest = [ForestRow(row.name, *_interval(row.summary), reference=row.reference) for row in rows]
    title, xlabel = f"{board.task}: macro AUROC", "macro AUROC, mean over folds [95% bootstrap CI]"
    drawn = [("Macro AUROC per row", "forest", plots.png(
        "forest", [forest, title, xlabel], lambda: forest_figure(forest, title=title, xlabel=xlabel),
        dpi=DPI, bbox_inches="tight"))]
    with_folds = {row.name: task.rows[row.name] for row in rows if task.rows[row.name].folds}
    if with_folds:
        title = f"{board.task}: ROC curves"
        drawn.append(("ROC curves per row", "roc", plots.png(
            "roc", [with_folds, title], lambda: roc_figure(with_folds, title=title), dpi=GRID_DPI)))
        traces = attention_traces(task, [row.name for row in rows if row.name in with_folds])
        if traces:
            lesions = {i: s for i, s in task.attention.lesion_slices.items() if s}
            scans, title = task.attention.scan_ids, f"{board.task}: attention"
            drawn.append(("Attention along the slice axis", "attention", plots.png(
                "attention", [traces, scans, lesions, title],
                lambda: attention_figure(traces, scans, lesions, title=title), dpi=GRID_DPI)))
        curves = {row.name: row.efficiency for row in sorted(
            (row for row in rows if row.efficiency), key=lambda row: -_area_or_floor(row.efficiency))}
        if curves:
            title = f"{board.task}: label efficiency"
            drawn.append(("Label efficiency", "label-efficiency", plots.png(
                "label-efficiency", [curves, title], lambda: efficiency_figure(curves, title=title), dpi=DPI,
                bbox_inches="tight")))
        title = f"{board.task}: reliability"
        drawn.append(("Reliability diagram", "reliability", plots.png(
            "reliability", [with_folds, title], lambda: reliability_figure(with_folds, title=title),
            dpi=120, bbox_inches="tight")))
    return drawn


def _area_or_floor(points: Sequence[EfficiencyPoint]) -> float:
    area = efficiency_area(points)
    return area if math.isfinite(area) else -math.inf


def attention_traces(task: StoredTask, names: Sequence[str]) -> dict[str, list[AttentionTrace | None]]:
    """Per row, the attention of each scan of the task's attention plot under the fold model that had it
    in its test set (``None`` where no fold tested it)."""
    if not task.attention.scan_ids:
        return {}
    windows = {row.name: (row.compute.windows if row.compute else []) for row in task.board.rows}
    traces: dict[str, list[AttentionTrace | None]] = {}
    for name in names:
        found: list[AttentionTrace | None] = []
        for scan_id in task.attention.scan_ids:
            trace = None
            for fold in task.rows[name].folds:
                if scan_id in fold.test_ids:
                    r = fold.test_ids.index(scan_id)
                    trace = AttentionTrace(scan_id, np.asarray(fold.slice_index[r]),
                                           np.asarray(fold.window_id[r]),
                                           np.asarray(fold.attention[r], dtype=np.float64), windows[name])
                    break
            found.append(trace)
        drawn = [t for t in found if t is not None and len(t.attention)]
        # a head that weighs every instance alike (mean pooling) has nothing to show along the slices
        if drawn and not all(np.ptp(t.attention) <= 1e-9 * max(1.0, float(np.abs(t.attention).max()))
                             for t in drawn):
            traces[name] = found
    return traces


def _interval(summary: Summary) -> tuple[float, float, float]:
    try:
        m = summary.get("auroc")
    except KeyError:
        return math.nan, math.nan, math.nan
    return m.mean, m.ci_low, m.ci_high


def overall_files(boards: Sequence[TaskBoard], *, benchmark: str, version: str, provenance: str,
                  left_out: Sequence[str], plots: PlotCache | None = None) -> dict[str, bytes]:
    """The overall board, its tables and the rank heat map, by file name."""
    files = _table_files("overall", overall_tables(boards, left_out))
    standing = overall_standing(boards)
    shown = [standing.tasks, standing.order, standing.names, standing.rank, benchmark]
    files["overall.ranks.png"] = (plots or PlotCache(None)).png(
        "ranks", shown, lambda: rank_heatmap(standing, title=benchmark), dpi=DPI, bbox_inches="tight")
    files["overall.md"] = render_overall_board(
        boards, benchmark=benchmark, version=version, left_out=left_out, provenance=provenance,
        figures={"Ranks across tasks": "overall.ranks.png"}).encode()
    return files


EMPTY_TABLE_COLUMNS = {"scans_left_out": ["scan_id", "reason"], "encoders_left_out": ["encoder"],
                       "comparisons": ["row", "reference", "kind", "metric", "label", "difference", "ci_low",
                                       "ci_high", "p", "p_holm", "p_floor"]}
"""The header of a table that has no row."""


def records_csv(records: Sequence[Mapping[str, Any]], columns: Sequence[str] = ()) -> str:
    """Records as CSV (columns: the keys of the first record, else ``columns``; undefined values empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = list(records[0]) if records else list(columns)
    writer.writerow(columns)
    for record in records:
        writer.writerow([_csv_value(record.get(c)) for c in columns])
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def predictions_csv(results: Sequence[CrossValResult]) -> str:
    """Out-of-fold probabilities of every repeat: ``scan_id,repeat,fold,p_<label>...``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scan_id", "repeat", "fold", *(f"p_{label}" for label in results[0].label_names)])
    for repeat, result in enumerate(results):
        for fold in sorted(result.folds, key=lambda f: f.fold):
            for scan_id, probs in zip(fold.test_ids, fold.test_probs, strict=True):
                writer.writerow([scan_id, repeat, fold.fold,
                                 *(f"{p:.6f}" for p in np.asarray(probs).reshape(-1))])
    return buffer.getvalue()


def pairs_csv(pairs: Sequence[PairedComparison]) -> str:
    """The all-pairs matrix: one line per pair, ``difference = row - reference``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "reference", "metric", "difference", "ci_low", "ci_high", "p", "p_holm"])
    for c in pairs:
        values = (c.difference, c.ci_low, c.ci_high, c.p_value, c.p_holm)
        writer.writerow([c.row, c.reference, c.metric, *(f"{v:.6g}" for v in values)])
    return buffer.getvalue()
