"""Reading checkpoint files that may come from anywhere: tensors and plain values only, never code.

Every reader of a ``.pt``/``.pth``/``.pth.tar`` file in clear-bench goes through :func:`load_tensors`, which
calls ``torch.load(weights_only=True)``. A file whose pickle would construct arbitrary Python objects (and so
could run code) is refused with a message that says so; torch's own advice to load it unsafely is not
passed on.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

from clear_bench.errors import UserError


def load_tensors(source: str | Path | bytes, *, what: str = "checkpoint", origin: str | Path | None = None,
                 error: type[Exception] = UserError, mmap: bool = False) -> Any:
    """The content of a checkpoint file (or its bytes), tensors and plain values only, on the CPU.

    ``what`` names the kind of file in messages, ``origin`` the file when ``source`` is bytes. An
    executable pickle and any other unreadable file are an ``error`` naming the file and what is wrong with
    it (for an executable pickle: that it was refused, and the object it names)."""
    import torch

    name = str(origin if origin is not None else ("<bytes>" if isinstance(source, bytes) else source))
    handle: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        return torch.load(handle, map_location="cpu", weights_only=True,
                          mmap=mmap and not isinstance(source, bytes))
    except pickle.UnpicklingError as exc:
        target = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
        if target is None:  # a damaged pickle, not a forbidden object
            raise error(f"{name}: not a readable {what} (UnpicklingError: {_reason(exc)})") from None
        raise error(
            f"{name}: refused: this {what} holds executable Python objects (it names {target.group(1)}), not "
            "just tensors; loading it could run code, so clear-bench does not. Save the weights as a plain "
            "state dict of tensors where the file was made, or use a checkpoint from a source you can "
            "verify.") from None
    except Exception as exc:
        raise error(f"{name}: not a readable {what} ({type(exc).__name__}: {_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    """The first line of torch's message that says what is wrong (not its advice on unsafe loading)."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line and "weights_only" not in line and "Weights only load failed" not in line:
            return line
    return type(exc).__name__
