"""The CLEAR seed layout: one folder of pre-windowed PNG slices per patient.

Slices are ordered by the last number in their file name (``slice_2.png`` before ``slice_10.png``), else
by name. 8-bit and 16-bit greyscale map to [0, 1]; RGB with equal channels is read as grey, RGB with
different channels (windows stacked as colours) as the mean of the channels, with a warning.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from clear_bench.data.files import safe_id
from clear_bench.data.scan import Scan
from clear_bench.errors import DataError

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"(\d+)(?!.*\d)")
IMAGE_SUFFIXES = (".png",)


def list_png_slices(folder: str | Path) -> list[Path]:
    """The PNG files of ``folder`` in slice order; a :class:`DataError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of PNG slices")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".")]
    if not files:
        raise DataError(f"{folder}: no PNG slices in this folder")

    def key(path: Path) -> tuple[int, int, str]:
        match = _NUMBER.search(path.stem)
        return (0, int(match.group(1)), path.name) if match else (1, 0, path.name)

    return sorted(files, key=key)


def read_png_slice(path: Path) -> np.ndarray:
    """One slice as float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: unreadable PNG ({exc})") from exc
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        scale = 65535.0
    elif mode in ("L", "RGB", "RGBA", "LA", "P"):
        scale = 255.0
        if mode == "P":
            with Image.open(path) as image:
                array = np.asarray(image.convert("L"))
    else:
        raise DataError(f"{path}: unsupported PNG mode {mode}")
    array = array.astype(np.float32)
    if array.ndim == 3:
        colour = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
        if colour.shape[-1] == 3 and not (np.array_equal(colour[..., 0], colour[..., 1])
                                          and np.array_equal(colour[..., 0], colour[..., 2])):
            log.warning("%s: colour channels differ; reading their mean as the grey slice", path)
        array = colour.mean(axis=-1)
    return np.clip(array / scale, 0.0, 1.0)


def read_seed_png(folder: str | Path, scan_id: str | None = None,
                  spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Scan:
    """A patient folder of pre-windowed PNG slices as ``Scan(prewindowed=True)``."""
    folder = Path(folder)
    files = list_png_slices(folder)
    planes = []
    for path in files:
        plane = read_png_slice(path)
        if planes and plane.shape != planes[0].shape:
            raise DataError(f"{path}: slice size {plane.shape} differs from {planes[0].shape} "
                            f"of {files[0].name}")
        planes.append(plane)
    return Scan(scan_id or safe_id(folder.name), np.stack(planes), spacing, prewindowed=True)
