"""clear-bench: a plugin-based benchmark harness for radiology (CT) slice-embedding models."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("clear-bench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

PROJECT = "clear_bench"
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marker for plugin hook implementations: ``@hookimpl def clear_bench_encoders(): ...``."""

_API = ("run", "evaluate", "evaluate_features", "load_results", "create_encoder")


def __getattr__(name: str):
    """The Python API (:mod:`clear_bench.api`), imported on first use so plugins stay cheap to load."""
    if name in _API:
        from clear_bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'clear_bench' has no attribute {name!r}")


__all__ = ["PROJECT", "__version__", "create_encoder", "evaluate", "evaluate_features", "hookimpl",
           "load_results", "run"]
