"""Small file helpers for data sources: safe ids from file names and content digests."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(name: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]`` (other runs become ``_``), never empty, never a dot-file."""
    cleaned = _UNSAFE.sub("_", name).strip("._") or "scan"
    return cleaned[:120]


def scan_stem(path: Path) -> str:
    """A file's name without its image extension(s): ``a.nii.gz`` -> ``a``."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz", ".dcm", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def files_digest(paths: Iterable[str | Path], chunk: int = 1 << 20) -> str:
    """sha256 over the bytes of ``paths`` (in the given order), with each file's length as a separator."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest.update(f"{size}:".encode())
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()
