"""Atomic file writes: a temporary file in the target's folder, fsynced, then ``os.replace`` over the target.

A reader never sees a half-written file, and a killed writer leaves at most a temporary
``.NAME.<random>.tmp`` beside the target (a glob for ``*.h5`` or ``*.png`` does not pick it up).
:func:`atomic_write` takes the content through a file handle; :func:`atomic_path` lends the temporary
path itself, for writers that need a file name (h5py, matplotlib, SimpleITK). A write that fails for want
of space (a full disk, a quota, a file-size limit) raises :class:`~clear_bench.errors.DiskFullError`
naming the target.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from clear_bench.errors import DiskFullError

_COMPRESSION = (".gz", ".bz2", ".xz", ".zst")
_NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)")  # how HDF5 reports a failed write


@contextlib.contextmanager
def atomic_path(path: str | Path, *, keep_extension: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends the file there is fsynced and renamed
    over ``path`` (and the folder fsynced). On an error the temporary is removed and ``path`` is untouched.

    The temporary exists (empty) when the block starts and is named ``.NAME.<random>.tmp``. Writers that
    choose the format by the file name need ``keep_extension=True`` (``.NAME.<random>.tmp.nii.gz``)::

        with atomic_path(out / "scan.nii.gz", keep_extension=True) as tmp:
            sitk.WriteImage(image, str(tmp))

    ``np.savez`` appends ``.npz`` to a name without it (and would write beside the temporary): give it
    ``keep_extension=True`` or, simpler, a file handle through :func:`atomic_write`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (_extension(target.name) if keep_extension else "")
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = no_space(exc)
        if reason:
            raise DiskFullError(f"cannot write {target}: {reason} (a full disk, a quota or a file-size "
                                "limit); nothing was left under that name. Free space and run again: "
                                "finished work is reused") from exc
        raise
    _fsync_dir(target.parent)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def no_space(exc: BaseException) -> str | None:
    """The system's words for why ``exc`` (or an error that caused it) is a write refused for want of
    space, or ``None`` when it is something else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return None  # already named its file
        code = current.errno if isinstance(current, OSError) else None
        found = code if code in _NO_SPACE else None
        if found is None:
            match = _ERRNO_IN_TEXT.search(str(current))
            found = int(match[1]) if match and int(match[1]) in _NO_SPACE else None
        if found is not None:
            return os.strerror(found)
        current = current.__cause__ or current.__context__
    return None


def temporaries(path: str | Path) -> list[Path]:
    """The temporary files that writers of ``path`` are using or that killed writers left behind; only a
    caller that holds ``path``'s lock may remove them."""
    target = Path(path)
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp*"))


def _extension(name: str) -> str:
    """``a.nii.gz`` -> ``.nii.gz``, ``b.h5`` -> ``.h5``, ``c`` -> ``""``."""
    suffixes = Path(name).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSION:
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems refuse a directory fsync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
