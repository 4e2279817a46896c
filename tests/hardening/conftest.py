"""Helpers of the hardening tests: small CT volumes written as real files, a benchmark YAML over a folder
of them (the ``folder`` source and the ``csv`` task of the ct-tasks plugin, non-learned encoders, a short
cross-validation) and ``clear-bench`` run as a separate process, as a user runs it."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from clear_bench.cli import main
from clear_bench.leaderboard import mask_measured

PLUGIN = Path(__file__).with_name("hardening_plugin.py")


def ct_volume(seed: int, slices: int = 4, size: int = 24) -> np.ndarray:
    """A tiny HU volume: air around a soft-tissue disc with a bright spot placed by ``seed``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    volume = np.where(body, 40.0, -1000.0)[None].repeat(slices, 0)
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    volume[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 4] = 300.0 + 200.0 * (seed % 2)
    return (volume + rng.normal(0.0, 10.0, volume.shape)).astype(np.int16)


def write_volume(path: Path, volume: np.ndarray,
                 spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)) -> Path:
    """Write ``volume [z, y, x]`` with SimpleITK (the format follows the suffix: .nii.gz, .nrrd, .mha)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def write_cohort(folder: Path, count: int, *, slices: int = 4, size: int = 24,
                 prefix: str = "case") -> dict[str, int]:
    """``count`` NIfTI scans ``<prefix>NNN.nii.gz`` in ``folder``; returns ``{id: label}`` (alternating)."""
    labels = {}
    for index in range(count):
        scan_id = f"{prefix}{index:03d}"
        write_volume(folder / f"{scan_id}.nii.gz", ct_volume(index, slices, size))
        labels[scan_id] = index % 2
    return labels


def write_labels(path: Path, labels: dict[str, int], *, header: str = "image,finding") -> Path:
    path.write_text(header + "\n" + "".join(f"{scan_id},{label}\n" for scan_id, label in labels.items()))
    return path


def bench_yaml(folder: Path, *, name: str = "hard", file: str | None = None, scans: str | Path = "scans",
               labels: str | Path = "labels.csv", cache: str | Path = "cache", out: str | Path = "run",
               boards: str | Path = "boards", encoders: str = "[hu-reference]",
               extraction: str = "{batch_size: 16, num_workers: 0}", folds: int = 2, epochs: int = 2,
               extra: str = "") -> Path:
    """A benchmark YAML ``folder/<file or name>.yaml`` over ``scans`` and ``labels`` (paths relative to
    ``folder``)."""
    path = folder / (file or f"{name}.yaml")
    path.write_text(f"""
name: {name}
device: cpu
output_dir: {out}
cache_dir: {cache}
leaderboard_dir: {boards}
plugins: [{PLUGIN}]
extraction: {extraction}
encoders: {encoders}
tasks:
  - name: csv
    id: finding
    options: {{source: {{name: folder, root: {scans}}}, csv: {labels}}}
aggregators:
  - {{name: mean-pool, options: {{dropout: 0.0}}}}
crossval: {{folds: {folds}, epochs: {epochs}, patience: {epochs}, batch_size: 8, bootstrap: 20,
           permutations: 0, comparison_resamples: 200, workers: 1}}
{extra}
""")
    return path


def clear_bench(*args: str | Path, cwd: Path, timeout: float = 240,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m clear_bench ARGS`` in ``cwd``; stdout and stderr together in ``.stdout``."""
    return subprocess.run([sys.executable, "-m", "clear_bench", *map(str, args)], cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def run_here(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``clear-bench ARGS`` in this process (no start-up cost); its output in ``.stdout``."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = main([str(arg) for arg in args])
    return subprocess.CompletedProcess(list(args), code, buffer.getvalue())


def start_clear_bench(*args: str | Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """``clear_bench`` started in the background, its output into ``log``."""
    handle = open(log, "wb")  # noqa: SIM115 (kept by the child)
    return subprocess.Popen([sys.executable, "-m", "clear_bench", *map(str, args)], cwd=cwd, stdout=handle,
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_when(config: Path, cwd: Path, log: Path, reached: Callable[[], bool]) -> None:
    """Start ``clear-bench run CONFIG`` and SIGKILL its process group as soon as ``reached()`` (polled);
    fails the test when the run ends or three minutes pass first."""
    with log.open("wb") as handle:
        run = subprocess.Popen([sys.executable, "-m", "clear_bench", "run", str(config), "--no-progress"],
                               cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 180
        try:
            while not reached():
                if run.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the kill point was not reached (exit {run.poll()}): "
                                f"{log.read_text()[-2000:]}")
                time.sleep(0.005)
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == -signal.SIGKILL


def boards(folder: Path) -> dict[str, str]:
    """Every board of a leaderboard folder, by file name, measured costs blanked (they differ by run)."""
    return {path.name: mask_measured(path.read_text()) for path in sorted(folder.glob("*.md"))}


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for the test modules (a conftest cannot be imported under importlib mode)."""
    return SimpleNamespace(ct_volume=ct_volume, write_volume=write_volume, write_cohort=write_cohort,
                           write_labels=write_labels, bench_yaml=bench_yaml, clear_bench=clear_bench,
                           run_here=run_here, start_clear_bench=start_clear_bench, kill_when=kill_when,
                           boards=boards)
