"""Saving matplotlib figures: PNG, written atomically, the figure closed whatever happens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clear_bench.atomic import atomic_path


def save_png(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` as PNG through a temporary file, then close it (``savefig`` options pass
    through, e.g. ``dpi``)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", **savefig)
    finally:
        plt.close(fig)
    return path
