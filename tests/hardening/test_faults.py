"""``clear-bench run`` killed with SIGKILL (the whole process group, as the OOM killer or ``scancel`` would)
at three points of extraction and three of cross-validation, each time rerun: every kill leaves only valid
files under final names, and the run that finally completes writes the boards of a run never interrupted.

Kill points are chosen by what is on disk (cache entries, fold results), so they do not depend on timing:
the test waits until the count is reached and checks afterwards that the stage was really cut short."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clear_bench.cache import EmbeddingCache

pytestmark = pytest.mark.slow

SCANS = 12
HEADS = ("  - {name: slow-mean, id: slow-a, options: {delay_s: 0.02}}\n"
         "  - {name: slow-mean, id: slow-b, options: {delay_s: 0.02, hidden_dim: 8}}")
ROWS = 4  # two encoders x two heads
FOLDS = 2


def _config(kit, folder: Path, name: str, cache: Path, out: Path, boards: Path) -> Path:
    path = kit.bench_yaml(folder, file=f"{name}.yaml", cache=cache, out=out, boards=boards, folds=FOLDS,
                          encoders="[hu-reference, {name: slow-probe, options: {delay_s: 0.1}}]",
                          extraction="{batch_size: 4, num_workers: 1}")
    path.write_text(path.read_text().replace("  - {name: mean-pool, options: {dropout: 0.0}}", HEADS))
    return path


def _entries(cache: Path) -> list[Path]:
    return list(cache.rglob("*.h5"))


def _folds(out: Path) -> list[Path]:
    return list(out.glob("tasks/*/folds/*.npz"))



def _nothing_corrupt(cache: Path, out: Path) -> None:
    """Every file under a final name is whole: cache entries validate, fold results load."""
    store = EmbeddingCache(cache)
    for key in store.entry_keys():
        assert store.get(key) is not None, f"corrupt cache entry {store.path(key)}"
    assert not store.problems
    for path in _folds(out):
        with np.load(path, allow_pickle=False) as fold:
            assert fold.files, path


def test_sigkill_during_extraction_and_crossval_then_rerun_gives_the_uninterrupted_boards(
        tmp_path_factory: pytest.TempPathFactory, kit) -> None:
    folder = tmp_path_factory.mktemp("faults")
    kit.write_labels(folder / "labels.csv", kit.write_cohort(folder / "scans", SCANS))
    straight = _config(kit, folder, "straight", folder / "cache-a", folder / "run-a", folder / "boards-a")
    result = kit.run_here("run", straight, "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:]
    uninterrupted = kit.boards(folder / "boards-a")

    cache, out = folder / "cache-b", folder / "run-b"
    config = _config(kit, folder, "killed", cache, out, folder / "boards-b")
    total_entries, total_folds = 2 * SCANS, ROWS * FOLDS
    points = [("extraction", lambda n=n: len(_entries(cache)) >= n)
              for n in (SCANS + 2, SCANS + 5, SCANS + 9)]
    points += [("crossval", lambda n=n: len(_folds(out)) >= n) for n in (1, 3, 5)]
    for index, (stage, reached) in enumerate(points):
        kit.kill_when(config, folder, folder / f"killed-{index}.log", reached)
        _nothing_corrupt(cache, out)
        if stage == "extraction":
            assert len(_entries(cache)) < total_entries and not _folds(out)  # cut short while embedding
        else:
            assert len(_entries(cache)) == total_entries and len(_folds(out)) < total_folds
        assert not (folder / "boards-b").exists()

    result = kit.run_here("run", config, "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:]
    assert kit.boards(folder / "boards-b") == uninterrupted
    assert len(_folds(out)) == total_folds
    leftovers = [p for p in cache.rglob("*") if p.is_file() and p.suffix not in (".h5", ".json")]
    assert not leftovers  # stale claims, lock files and temporaries of the killed runs were cleared
