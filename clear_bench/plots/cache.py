"""Drawn plots, content-addressed: a plot is drawn again only when what it draws changes.

Drawing is the costliest part of rendering the boards of a run whose folds and statistics are cached. A
plot is a pure function of its inputs, its savefig options, the plotting code and the matplotlib version,
so its PNG is stored under ``<folder>/<kind>-<key>.png`` with the key a hash of all four; a rerun with
the same inputs reads the bytes back (the same bytes a fresh drawing gives, since PNGs carry no timestamp).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clear_bench.atomic import atomic_write_bytes
from clear_bench.figures import png_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"


class PlotCache:
    """Draws plots, or reads them back from ``folder`` (``None``: always draws). ``drawn`` and ``reused``
    count what it did; :meth:`prune` removes the stored plots this cache has not served."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.drawn = 0
        self.reused = 0
        self._served: set[str] = set()

    def png(self, kind: str, inputs: Any, draw: Callable[[], Any], **savefig: Any) -> bytes:
        """The PNG bytes of the figure ``draw()`` returns for ``inputs`` (everything the figure shows:
        data, titles, row order), saved with ``savefig`` options."""
        if self.folder is None:
            self.drawn += 1
            return png_bytes(draw(), **savefig)
        digest = hashlib.sha256(plotting_code_fingerprint().encode())
        _feed(digest, [kind, inputs, sorted(savefig.items())])
        name = f"{kind}-{digest.hexdigest()[:24]}.png"
        self._served.add(name)
        path = self.folder / name
        if path.is_file():
            data = path.read_bytes()
            if data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END):
                self.reused += 1
                return data
        data = png_bytes(draw(), **savefig)
        atomic_write_bytes(path, data)
        self.drawn += 1
        return data

    def prune(self) -> int:
        """Delete stored plots not served since this cache was made (plots of earlier inputs); returns how
        many were deleted."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        stale = [p for p in self.folder.glob("*.png") if p.name not in self._served]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)


@functools.cache
def plotting_code_fingerprint() -> str:
    """A hash of the plotting code (this package, the PNG writer, the reliability diagram) and of the
    matplotlib version: a change to either draws every plot again."""
    import matplotlib

    from clear_bench import figures
    from clear_bench.evaluation import reliability

    digest = hashlib.sha256(matplotlib.__version__.encode())
    own = sorted(Path(__file__).parent.glob("*.py"))
    sources = [*own, Path(figures.__file__), Path(reliability.__file__)]
    for path in sources:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Feed a canonical encoding of ``value`` (dataclasses, mappings in their order, sequences, arrays,
    scalars) into ``digest``; anything else is a ``TypeError``, never a silently coarser key."""
    if is_dataclass(value) and not isinstance(value, type):
        digest.update(f"<{type(value).__qualname__}".encode())
        for f in fields(value):
            digest.update(f.name.encode())
            _feed(digest, getattr(value, f.name))
        digest.update(b">")
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"a{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes() if array.dtype != object else repr(array.tolist()).encode())
    elif isinstance(value, (float, np.floating)):
        number = float(value)
        digest.update(b"f" + (b"nan" if math.isnan(number) else number.hex().encode()))
    elif value is None or isinstance(value, (bool, int, str, np.integer, np.bool_)):
        digest.update(f"{type(value).__name__}:{value!r}".encode())
    else:
        raise TypeError(f"plot inputs: cannot key a {type(value).__name__}")
