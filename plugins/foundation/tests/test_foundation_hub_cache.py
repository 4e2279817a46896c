"""Weights in the Hugging Face cache are found from the file system; a hub that never answers costs at
most the probe's half second, not minutes of retries."""

from __future__ import annotations

import time

import pytest
from clear_bench_foundation import weights
from clear_bench_foundation.weights import HUB_PROBE_TIMEOUT_S, cached_hub_file, hub_file

from clear_bench.errors import WeightsNotFoundError


def _cache_layout(root, repo_id: str, filename: str, payload: bytes) -> None:
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(payload)


def test_a_cached_file_is_served_without_the_hub(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cache_layout(tmp_path, "org/model", "pytorch_model.bin", b"weights")
    monkeypatch.setattr(weights, "hub_reachable", lambda *a, **k: pytest.fail("asked the hub"))
    started = time.perf_counter()
    found = hub_file(
        "org/model", ["model.safetensors", "pytorch_model.bin"], who="m", how="h", cache_dir=tmp_path
    )
    assert time.perf_counter() - started < 0.1
    assert found.read_bytes() == b"weights" and found.name == "pytorch_model.bin"
    assert cached_hub_file("org/model", "model.safetensors", tmp_path) is None
    assert cached_hub_file("org/other", "pytorch_model.bin", tmp_path) is None
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # the environment's cache when none is named
    assert cached_hub_file("org/model", "pytorch_model.bin") == found


def test_a_hub_that_never_answers_costs_the_probe_only(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def silent(*args: object, **kwargs: object) -> None:  # a network that neither connects nor refuses
        time.sleep(5.0)
        raise OSError("timed out")

    monkeypatch.setattr(weights.socket, "create_connection", silent)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    weights.hub_reachable.cache_clear()
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="did not answer within"):
        hub_file("org/model", ["model.safetensors"], who="m", how="h", cache_dir=tmp_path)
    assert time.perf_counter() - started < HUB_PROBE_TIMEOUT_S + 0.5
    started = time.perf_counter()  # the answer is remembered for the process
    with pytest.raises(WeightsNotFoundError):
        hub_file("org/model", ["pytorch_model.bin"], who="m", how="h", cache_dir=tmp_path)
    assert time.perf_counter() - started < 0.1


def test_offline_never_probes(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "hub_reachable", lambda *a, **k: pytest.fail("probed while offline"))
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE is set"):
        hub_file("org/model", ["model.safetensors"], who="m", how="h", cache_dir=tmp_path)
