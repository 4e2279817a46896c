"""``clear-bench extract`` under ``torchrun`` with two ranks (gloo, CPU): each rank embeds its share of the
scans, and the cache they leave together holds the entries of one process: the same keys, the same arrays,
nothing else beside them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clear_bench.cache import EmbeddingCache
from clear_bench.pipeline.extract import THROUGHPUT_FILE

pytestmark = pytest.mark.slow

SCANS = 5
# A random-init two-block ViT of the lecl-vit plugin; one slice per batch, so both runs compute every
# slice in the same batch shape and the arrays can be compared exactly.
FLAGS = ["--encoder", "lecl-vit", "--option", "weights=random", "--option", "arch=vit_tiny_patch16",
         "--option", "img_size=32", "--option", "arch_kwargs={depth: 2}", "--option", "seed=0",
         "--batch-size", "1", "--num-workers", "0", "--precision", "fp32", "--device", "cpu", "--no-progress"]
_SHARE = re.compile(r"lecl-vit \(random init\) \[rank (\d)/2\]: (\d+) extracted, (\d+) cached, (\d+) failed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(prefix: list[str], args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``PREFIX -m clear_bench ARGS``; a hang past ``timeout`` kills the whole process group and fails."""
    command = [*prefix, "-m", "clear_bench", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command[:6])}... hung: {output[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output)


def _entries(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    cache = EmbeddingCache(root)
    out = {}
    for key in cache.entry_keys():
        entry = cache.get(key)
        assert entry is not None, f"corrupt entry {cache.path(key)}"
        out[key] = (entry.embeddings, entry.slice_index, entry.window_id)
    return out


def test_two_torchrun_ranks_write_the_cache_entries_of_one_process(tmp_path, scan_writer, plugin_file):
    scan_writer(tmp_path / "scans", SCANS, slices=3, size=32)
    source = ["--plugin", str(plugin_file), "extract", "--source", "nifti-folder",
              "--source-option", f"folder={tmp_path / 'scans'}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    ranks = _launch(torchrun, [*source, *FLAGS, "--cache-dir", str(tmp_path / "ranks")])
    assert ranks.returncode == 0, ranks.stdout[-3000:]
    shares = {int(m[1]): tuple(map(int, m.groups()[1:])) for m in _SHARE.finditer(ranks.stdout)}
    assert shares == {0: (3, 0, 0), 1: (2, 0, 0)}, ranks.stdout[-3000:]  # scans 0, 2, 4 and 1, 3

    alone = _launch([sys.executable], [*source, *FLAGS, "--cache-dir", str(tmp_path / "alone")])
    assert alone.returncode == 0, alone.stdout[-3000:]
    assert "5 extracted, 0 cached" in alone.stdout

    sharded, single = _entries(tmp_path / "ranks"), _entries(tmp_path / "alone")
    assert len(single) == SCANS and sorted(sharded) == sorted(single)
    for key, (embeddings, slice_index, window_id) in single.items():
        np.testing.assert_array_equal(sharded[key][0], embeddings, err_msg=key)
        np.testing.assert_array_equal(sharded[key][1], slice_index)
        np.testing.assert_array_equal(sharded[key][2], window_id)
    leftovers = [p.name for p in (tmp_path / "ranks").rglob("*")
                 if p.is_file() and p.suffix != ".h5" and p.name != THROUGHPUT_FILE]
    assert not leftovers  # no claim, lock or temporary of either rank
