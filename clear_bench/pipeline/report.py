"""Stage 4, report: boards, per-cell results, comparisons and the run manifest, written atomically.

Layout of a run folder (``load_results`` reads it back)::

    run.json                                  what ran: encoders, tasks, scans and encoders left out
    leaderboards/<task>.md, overall.md        also copied to the benchmark's leaderboard_dir
    tasks/<task>/results/cells.json           one entry per (encoder, head): files, weights, controls
    tasks/<task>/results/<row>.json           the row's summary (every metric, per label and macro)
    tasks/<task>/results/<row>.predictions.csv  out-of-fold probabilities
    tasks/<task>/results/comparisons.json     the declared comparisons of the board
    leaderboards/<task>.pairs.csv             the all-pairs matrix (exploratory, Holm over the matrix)
    leaderboards/<task>.reliability.png       reliability diagram of every row (per-fold bins, averaged)
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import math
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from clear_bench import __version__
from clear_bench.atomic import atomic_write_bytes, atomic_write_text
from clear_bench.evaluation.compare import PairedComparison
from clear_bench.evaluation.crossval import CrossValResult
from clear_bench.evaluation.reliability import reliability_diagram
from clear_bench.leaderboard import render_overall_board, render_task_board
from clear_bench.naming import safe_filename
from clear_bench.pipeline.evaluate import TaskResult

RESULTS_FORMAT = 1
PROVENANCE_PACKAGES = ("torch", "timm", "numpy", "scipy", "scikit-learn", "pandas", "h5py")
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


def write_report(results: Sequence[TaskResult], *, benchmark: str, run_dir: Path,
                 leaderboard_dirs: Sequence[Path] = (), left_out: Sequence[str] = (),
                 manifest: dict[str, Any] | None = None) -> list[Path]:
    """Write every task's results and board, the overall board and ``run.json``; returns the boards."""
    for result in results:
        write_task_results(result)
    boards = [result.board for result in results]
    folders = sorted({run_dir / "leaderboards", *leaderboard_dirs})
    origin = provenance(folders)
    line = provenance_line(origin)
    written = []
    for result in results:  # every artefact is made once, then placed in each leaderboard folder
        board = result.board
        stem = safe_filename(board.task)
        files = {f"{stem}.pairs.csv": pairs_csv(board.pairs).encode()}
        board.files = {"all-pairs matrix": f"{stem}.pairs.csv"}
        if result.cells:
            png = reliability_diagram({c.row.name: c.result for c in result.cells},
                                      folders[0] / f"{stem}.reliability.png",
                                      title=f"{board.task}: reliability")
            files[png.name] = png.read_bytes()
            board.files["reliability diagram"] = png.name
        files[f"{stem}.md"] = render_task_board(board, benchmark=benchmark, version=__version__,
                                                   provenance=line).encode()
        for folder in folders:
            for name, data in files.items():
                if not (folder == folders[0] and name.endswith(".png")):
                    atomic_write_bytes(folder / name, data)
            written.append(folder / f"{stem}.md")
    if boards:
        overall = render_overall_board(boards, benchmark=benchmark, version=__version__, left_out=left_out,
                                       provenance=line)
        for folder in folders:
            written.append(atomic_write_text(folder / "overall.md", overall))
    if manifest is not None:
        body = {"benchmark": benchmark, "clear_bench_version": __version__, "results_format": RESULTS_FORMAT,
                "provenance": origin,
                **manifest, "tasks_evaluated": [r.board.task for r in results]}
        atomic_write_text(run_dir / "run.json", json.dumps(_finite(body), indent=1, sort_keys=True))
    return sorted(set(written))


def write_task_results(result: TaskResult) -> None:
    """Every cell's summary JSON and predictions CSV, the cell index and the comparisons of one task."""
    folder = result.task_dir / "results"
    index = []
    for cell in result.cells:
        stem = safe_filename(cell.row.name)
        summary = json.dumps(cell.summary.to_dict(), indent=1, sort_keys=True)
        atomic_write_text(folder / f"{stem}.json", summary)
        atomic_write_text(folder / f"{stem}.predictions.csv", predictions_csv(cell.results))
        null = asdict(cell.row.null) if cell.row.null else None
        index.append({"encoder": cell.row.encoder, "aggregator": cell.row.aggregator,
                      "weights": cell.row.weights, "null": null,
                      "summary": f"{stem}.json", "predictions": f"{stem}.predictions.csv"})
    board = result.board
    atomic_write_text(folder / "cells.json", json.dumps(_finite({
        "task": board.task, "label_type": board.label_type, "label_names": board.label_names,
        "n_scans": board.n_scans, "n_folds": board.n_folds, "metric": board.metric, "level": board.level,
        "repeats": board.repeats, "permutations": board.permutations, "null_heads": board.null_heads,
        "split_fingerprint": board.split_fingerprint(), "excluded": board.excluded, "cells": index,
    }), indent=1, sort_keys=True))
    comparisons = [asdict(c) for c in board.comparisons]
    atomic_write_text(folder / "comparisons.json", json.dumps(_finite(comparisons), indent=1, sort_keys=True))


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


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined values become null."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
