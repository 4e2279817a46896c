"""A machine without the hub fails in seconds with a clear message, never after minutes of retries."""

from __future__ import annotations

import socket
import time

import pytest
from clear_bench_foundation.weights import hub_file, hub_reachable

from clear_bench.errors import WeightsNotFoundError


def test_an_unreachable_hub_is_not_retried(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on: connections are refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not hub_reachable(endpoint)
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as error:
        hub_file("someone/some-model", ["model.safetensors"], who="some-model", how="put it in the cache",
                 cache_dir=tmp_path)
    assert time.perf_counter() - started < 10
    message = str(error.value)
    assert f"the hub at {endpoint} did not answer" in message and "put it in the cache" in message
