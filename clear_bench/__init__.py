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

__all__ = ["PROJECT", "__version__", "hookimpl"]
