"""``clear-bench run`` out of space: a real size limit on every file the run writes (``RLIMIT_FSIZE``, with
``SIGXFSZ`` ignored so that a write past it fails with ``EFBIG``, as a full disk fails with ``ENOSPC``).
The run stops with one clear line naming the file it could not write, leaves nothing under that name and
nothing corrupt elsewhere, and a rerun with space completes with the boards of a run that never ran out.

The limit is placed three times, so that the refused write is a cache entry, a fold result, a plot."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clear_bench.atomic import temporaries
from clear_bench.cache import EmbeddingCache

pytestmark = pytest.mark.slow

_REFUSED = re.compile(r"^error: cannot write (\S+): File too large \(a full disk", re.MULTILINE)


def _limited_run(config: Path, cwd: Path, max_bytes: int) -> subprocess.CompletedProcess[str]:
    """``clear-bench run CONFIG`` in a process that may write no file larger than ``max_bytes``."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    # No DataLoader worker: its batches travel through shared-memory files, which the limit covers too.
    return subprocess.run([sys.executable, "-m", "clear_bench", "run", str(config), "--no-progress"],
                          cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240,
                          preexec_fn=limit, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _nothing_corrupt(cache: Path, out: Path) -> None:
    store = EmbeddingCache(cache)
    for key in store.entry_keys():
        assert store.get(key) is not None, f"corrupt cache entry {store.path(key)}"
    assert not store.problems
    for path in out.glob("tasks/*/folds/*.npz"):
        with np.load(path, allow_pickle=False) as fold:
            assert fold.files, path


def test_a_run_out_of_space_names_the_file_corrupts_nothing_and_a_rerun_gives_the_boards(tmp_path, kit):
    kit.write_labels(tmp_path / "labels.csv", kit.write_cohort(tmp_path / "scans", 12))
    encoders = "[hu-reference, slow-probe]"
    extraction = "{batch_size: 4, num_workers: 0}"
    straight = kit.bench_yaml(tmp_path, file="straight.yaml", cache="cache-a", out="run-a", boards="boards-a",
                              encoders=encoders, extraction=extraction)
    result = kit.run_here("run", straight, "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:]

    config = kit.bench_yaml(tmp_path, file="full.yaml", cache="cache-b", out="run-b", boards="boards-b",
                            encoders=encoders, extraction=extraction)
    cache, out = tmp_path / "cache-b", tmp_path / "run-b"
    # Entries are ~7 kB, fold results ~2 kB, split files ~1 kB, plots > 15 kB.
    for max_bytes, refused, fill_cache_first in ((4_000, cache, False), (1_500, out / "tasks", True),
                                                 (10_000, out / "plots", False)):
        if fill_cache_first:
            assert kit.run_here("extract", config, "--no-progress").returncode == 0
        result = _limited_run(config, tmp_path, max_bytes)
        assert result.returncode == 2, result.stdout[-3000:]
        assert "Traceback" not in result.stdout, result.stdout[-3000:]
        (path,) = _REFUSED.findall(result.stdout)
        path = Path(path)
        assert path.is_relative_to(refused), result.stdout[-2000:]
        assert not path.exists() and not temporaries(path)  # nothing under its name, no temporary left
        _nothing_corrupt(cache, out)
        assert not (tmp_path / "boards-b").exists()

    result = kit.run_here("run", config, "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:]
    assert kit.boards(tmp_path / "boards-b") == kit.boards(tmp_path / "boards-a")
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix not in (".h5", ".json")]
