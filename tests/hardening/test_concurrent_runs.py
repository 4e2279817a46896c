"""Two ``clear-bench run`` on one cache at the same time share the work: every scan is embedded once, by
one of them, the other waits for or reuses that entry, and both boards equal those of one run alone. A run
killed while it embeds leaves claims that the next run detects as stale, clears, and completes."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from clear_bench.cache import EmbeddingCache
from clear_bench.pipeline.extract import THROUGHPUT_FILE

SCANS = 12
_REPORT = re.compile(r"encoder (\S+) x task \S+: .*?: (\d+) extracted, (\d+) cached, (\d+) failed")


def _extracted(log: str) -> dict[str, tuple[int, int, int]]:
    return {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in _REPORT.finditer(log)}


def _encoder_folders(cache: Path) -> dict[str, str]:
    """The cache folder of each encoder, by encoder name (from the provenance of one of its entries)."""
    folders = {}
    for folder in cache.iterdir():
        entry = EmbeddingCache(cache).get(f"{folder.name}-{next(folder.rglob('*.h5')).stem}")
        folders[entry.provenance["encoder"]["name"]] = folder.name
    return folders


def _leftovers(cache: Path) -> list[Path]:
    """Files in the cache other than entries and the encoders' measured throughput (claims, locks...)."""
    return [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".h5")
            and p.name != THROUGHPUT_FILE]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, kit) -> tuple[Path, dict[str, str]]:
    """The scans and labels, and the boards of one cold run alone."""
    folder = tmp_path_factory.mktemp("cohort")
    kit.write_labels(folder / "labels.csv", kit.write_cohort(folder / "scans", SCANS))
    config = kit.bench_yaml(folder, encoders="[hu-reference, slow-probe]")
    result = kit.run_here("run", config, "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:]
    return folder, kit.boards(folder / "boards")


def _encoders(**options: object) -> str:
    text = ", ".join(f"{k}: {v}" for k, v in options.items())
    return f"[hu-reference, {{name: slow-probe, options: {{{text}}}}}]"


def test_two_runs_on_one_cache_embed_every_scan_once_and_give_the_boards_of_one_run(cohort, kit):
    folder, alone = cohort
    barrier = folder / "barrier"
    logs, runs = {}, {}
    for name, workers in (("a", 1), ("b", 0)):
        config = kit.bench_yaml(folder, file=f"concurrent-{name}.yaml", cache="shared-cache",
                                out=f"run-{name}", boards=f"boards-{name}",
                                extraction=f"{{batch_size: 4, num_workers: {workers}}}",
                                encoders=_encoders(delay_s=0.15, barrier=barrier))
        logs[name] = folder / f"{name}.log"
        runs[name] = kit.start_clear_bench("run", config, "--no-progress", cwd=folder, log=logs[name])
    for name, run in runs.items():
        assert run.wait(timeout=240) == 0, logs[name].read_text()[-3000:]
    reports = {name: _extracted(log.read_text()) for name, log in logs.items()}
    for encoder in ("hu-reference", "slow-probe"):
        a, b = reports["a"][encoder], reports["b"][encoder]
        assert a[0] + b[0] == SCANS, reports  # each scan embedded by one run only
        assert a[0] + a[1] == SCANS and b[0] + b[1] == SCANS and a[2] == b[2] == 0
    probe_a, probe_b = reports["a"]["slow-probe"], reports["b"]["slow-probe"]
    assert probe_a[0] > 0 and probe_b[0] > 0, reports  # both embedded at the same time: the work was shared
    assert kit.boards(folder / "boards-a") == alone == kit.boards(folder / "boards-b")
    assert not _leftovers(folder / "shared-cache")  # no lock or claim beside the entries


def test_a_run_killed_while_embedding_leaves_stale_claims_the_next_run_clears(cohort, kit, tmp_path):
    folder, alone = cohort
    cache, after_entries = tmp_path / "cache", 4
    def config(workers: int) -> Path:
        return kit.bench_yaml(folder, file=f"killed-{workers}.yaml", cache=cache, out=tmp_path / "run",
                              boards=tmp_path / "boards", encoders=_encoders(delay_s=0.2),
                              extraction=f"{{batch_size: 4, num_workers: {workers}}}")

    victim = kit.start_clear_bench("run", config(1), "--no-progress", cwd=folder, log=tmp_path / "killed.log")
    probe = cache / _encoder_folders(folder / "cache")["slow-probe"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if len(list(probe.rglob("*.h5"))) >= after_entries and list(probe.rglob("*.claim")):
            break
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    claims = list(cache.rglob("*.claim"))
    assert claims, (tmp_path / "killed.log").read_text()[-2000:]  # claims outlived the killed run
    done = len(list(probe.rglob("*.h5")))
    assert after_entries <= done < SCANS

    started = time.monotonic()
    result = kit.run_here("run", config(0), "--no-progress")  # no worker: its warnings are captured here
    assert result.returncode == 0, result.stdout[-3000:]
    assert time.monotonic() - started < 120  # no waiting for a timeout: the owner is known to be dead
    assert "stale claim on cache entry" in result.stdout and "no longer running" in result.stdout
    report = _extracted(result.stdout)["slow-probe"]
    assert report == (SCANS - done, done, 0)
    assert kit.boards(tmp_path / "boards") == alone
    assert not _leftovers(cache)
