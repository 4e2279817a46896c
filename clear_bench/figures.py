"""Saving matplotlib figures: PNG, written atomically or as bytes, the figure closed whatever happens.

PNGs carry no software version and no timestamp, so the same figure gives the same bytes on every run
(``clear-bench leaderboard`` regenerates a run's plots byte for byte).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from clear_bench.atomic import atomic_write_bytes

PNG_METADATA = {"Software": None}
"""No 'Software' chunk (it names the matplotlib version); PNG output has no timestamp."""


def png_bytes(fig: Any, **savefig: Any) -> bytes:
    """``fig`` as PNG bytes, then closed (``savefig`` options pass through, e.g. ``dpi``)."""
    import matplotlib.pyplot as plt

    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata=PNG_METADATA, **savefig)
        return buffer.getvalue()
    finally:
        plt.close(fig)


def save_png(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` as PNG through a temporary file, then close it."""
    path = Path(path)
    atomic_write_bytes(path, png_bytes(fig, **savefig))
    return path
