"""Turning ids (scan ids, task and encoder ids) into safe file names."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_filename(scan_id: str) -> str:
    """A file stem for ``scan_id``: the id itself when it is a plain name, else a sanitised form with a
    short hash of the original (so two ids never share a file)."""
    cleaned = _UNSAFE.sub("_", scan_id)[:120]
    if cleaned == scan_id and cleaned not in ("", ".", "..") and not cleaned.startswith("."):
        return cleaned
    digest = hashlib.sha256(scan_id.encode()).hexdigest()[:8]
    return f"{cleaned.lstrip('.') or 'scan'}-{digest}"
