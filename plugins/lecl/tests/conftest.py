"""Every LeCL test (and the processes it starts) keeps the clear-bench cache, where pretraining's disk
slice stores go by default, in a temporary folder instead of the user's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEAR_BENCH_CACHE", str(tmp_path_factory.mktemp("clear-bench-cache")))
        yield
