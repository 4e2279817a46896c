"""Claims and entry locks of the embedding cache, with real processes: one claimant wins, a lock file or a
claim left by a killed process is taken over, a claim of another host goes stale only when its heartbeat
stops, and nothing is left beside the entries once they are written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from clear_bench.cache import ClaimKeeper, ClaimOwner, EmbeddingCache

KEY = "0123456789abcdef-" + "a" * 32

_CLAIMANT = """
import sys, time
from clear_bench.cache import ClaimOwner, EmbeddingCache
cache, key, go = EmbeddingCache(sys.argv[1]), sys.argv[2], float(sys.argv[3])
while time.time() < go:
    time.sleep(0.001)
print(int(cache.claim(key, ClaimOwner.current())), flush=True)
time.sleep(float(sys.argv[4]))
"""


def test_of_processes_claiming_one_entry_at_once_exactly_one_wins(tmp_path):
    go = time.time() + 2.0
    claimants = [subprocess.Popen([sys.executable, "-c", _CLAIMANT, str(tmp_path), KEY, str(go), "1"],
                                  stdout=subprocess.PIPE, text=True) for _ in range(4)]
    won = [int(claimant.communicate(timeout=60)[0]) for claimant in claimants]
    assert sorted(won) == [0, 0, 0, 1]
    assert not list(tmp_path.rglob("*.lock"))


def test_a_claim_left_by_a_killed_process_is_reported_and_taken_over(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _CLAIMANT, str(tmp_path), KEY, "0", "60"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "1"
    me = ClaimOwner.current()
    assert not cache.claim(KEY, me)  # its owner is alive: busy
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert cache.claim_holder(KEY).pid == holder.pid  # the claim outlived its owner
    assert cache.claim(KEY, me)
    assert cache.claim_holder(KEY) == me
    assert f"its owner, process {holder.pid}" in caplog.text and "no longer running" in caplog.text
    cache.release(KEY, me)
    assert not cache.claim_path(KEY).exists() and not list(tmp_path.rglob("*.lock"))


def test_a_claim_of_another_host_goes_stale_only_when_its_heartbeat_stops(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path, claim_timeout_s=30)
    me = ClaimOwner.current()
    remote = replace(me, host="node-elsewhere", pid=1, token="remote")
    assert cache.claim(KEY, remote)
    path = cache.claim_path(KEY)
    assert not cache.claim(KEY, me)  # fresh heartbeat: pid 1 on another host is not checked here
    os.utime(path, (time.time() - 25, time.time() - 25))
    assert not cache.claim(KEY, me)
    os.utime(path, (time.time() - 31, time.time() - 31))
    assert cache.claim(KEY, me)
    assert "node-elsewhere" in caplog.text and "no heartbeat for 31 s" in caplog.text
    cache.release(KEY, remote)  # the remote owner's late release leaves the new claim alone
    assert cache.claim_holder(KEY) == me


def test_a_reused_pid_is_not_mistaken_for_the_owner(tmp_path):
    cache = EmbeddingCache(tmp_path)
    me = ClaimOwner.current()
    cache.claim(KEY, replace(me, token="earlier", started="1"))  # our pid, but another process's start
    assert cache.claim(KEY, me)


def test_an_unreadable_claim_is_cleared(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    cache.path(KEY).parent.mkdir(parents=True)
    cache.claim_path(KEY).write_text("{not json")
    assert cache.claim(KEY, ClaimOwner.current())
    assert "unreadable claim" in caplog.text


_LOCK_HOLDER = """
import sys, time
from clear_bench.cache import EmbeddingCache
lock = EmbeddingCache(sys.argv[1]).lock(sys.argv[2])
lock.__enter__()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_lock_file_left_by_a_killed_holder_blocks_nobody_and_is_removed_by_the_next(tmp_path):
    cache = EmbeddingCache(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(tmp_path), KEY],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    lock_file = cache.path(KEY).with_name(cache.path(KEY).name + ".lock")
    blocked = cache.lock(KEY)
    blocked.timeout = 0.3
    with pytest.raises(TimeoutError, match="could not lock"):
        blocked.__enter__()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_file.exists()
    started = time.monotonic()
    with cache.lock(KEY):
        pass
    assert time.monotonic() - started < 1.0 and not lock_file.exists()


def test_a_written_entry_leaves_neither_lock_nor_claim_and_heartbeats_keep_a_claim_fresh(tmp_path):
    cache = EmbeddingCache(tmp_path)
    with ClaimKeeper(cache, heartbeat_s=0.05) as keeper:
        assert cache.claim(KEY, keeper.owner)
        keeper.hold(KEY)
        path = cache.claim_path(KEY)
        os.utime(path, (0, 0))
        deadline = time.monotonic() + 10
        while path.stat().st_mtime < time.time() - 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_mtime > time.time() - 60  # the heartbeat refreshed it
        assert json.loads(path.read_text())["pid"] == os.getpid()
        keeper.put(KEY, np.ones((2, 3), np.float32), np.arange(2), np.zeros(2), {"scan_id": "s"})
        assert not path.exists()
        other = "0123456789abcdef-" + "b" * 32
        assert cache.claim(other, keeper.owner)
        keeper.hold(other)
    assert not cache.claim_path(other).exists()  # released when the extraction ends
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [cache.path(KEY).name]


def test_what_a_killed_writer_left_beside_a_valid_entry_is_tidied_and_a_live_claim_is_kept(tmp_path):
    """Killed between the entry's rename and the release of its lock and claim: a later run that finds the
    entry valid clears both; a claim whose owner is alive stays."""
    cache = EmbeddingCache(tmp_path)
    cache.put(KEY, np.ones((2, 3), np.float32), np.arange(2), np.zeros(2), {"scan_id": "s"})
    lock_file = cache.path(KEY).with_name(cache.path(KEY).name + ".lock")
    lock_file.write_text("")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = replace(ClaimOwner.current(), pid=dead.pid, token="dead")
    cache.claim_path(KEY).write_text(json.dumps(gone.__dict__))
    cache.tidy(KEY)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [cache.path(KEY).name]
    alive = ClaimOwner.current()
    assert cache.claim(KEY, alive)
    cache.tidy(KEY)
    assert cache.claim_holder(KEY) == alive and not lock_file.exists()
