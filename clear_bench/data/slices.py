"""From a scan to the 2D instances an encoder sees: slice selection, HU windowing and resizing.

Two ways of feeding windows to a 2D encoder:

* ``per-window`` (the CLEAR way): one grey image per (slice, window), replicated to the encoder's channels,
  interleaved slice-major (slice0-w0, slice0-w1, ..., slice1-w0, ...), each instance keeping its window id.
* ``stacked``: the windows of a slice are the channels of one image (window id -1).

``input == "hu"`` gives one channel of resized Hounsfield units (for the non-learned reference). Values of
windowed images lie in [0, 1]; mean/std normalisation is the extraction's job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from clear_bench.data.scan import Scan
from clear_bench.data.windowing import Window, parse_window
from clear_bench.errors import ConfigError, DataError
from clear_bench.specs import stable_hash

SLICING_VERSION = 1
"""Bumped when the pixels produced for a given plan change (enters every embedding cache key)."""

AIR_HU = -1024.0


@dataclass(frozen=True)
class SlicePlan:
    """Which slices of a scan become instances, and how they are windowed and resized."""

    windows: tuple[str, ...] = ("soft-tissue", "lung", "bone")
    window_mode: Literal["per-window", "stacked"] = "per-window"
    slice_step: int = 1
    slice_spacing_mm: float | None = None
    image_size: int = 224
    channels: int = 3
    input: Literal["windowed", "hu"] = "windowed"

    def __post_init__(self) -> None:
        if isinstance(self.windows, str | list):  # tolerate a single name or a YAML list
            object.__setattr__(self, "windows", (self.windows,) if isinstance(self.windows, str)
                               else tuple(self.windows))
        if self.window_mode not in ("per-window", "stacked"):
            raise ConfigError(f"window_mode '{self.window_mode}': expected 'per-window' or 'stacked'")
        if self.input not in ("windowed", "hu"):
            raise ConfigError(f"input '{self.input}': expected 'windowed' or 'hu'")
        if self.slice_step < 1:
            raise ConfigError(f"slice_step must be >= 1, got {self.slice_step}")
        if self.slice_spacing_mm is not None and not self.slice_spacing_mm > 0:
            raise ConfigError(f"slice_spacing_mm must be positive, got {self.slice_spacing_mm}")
        if self.image_size < 1 or self.channels < 1:
            raise ConfigError("image_size and channels must be >= 1")
        if self.input == "windowed":
            if not self.windows:
                raise ConfigError("a windowed slice plan needs at least one window")
            for spec in self.windows:
                parse_window(spec)
            if self.window_mode == "stacked" and len(self.windows) != self.channels:
                raise ConfigError(f"stacked windows need exactly {self.channels} windows (one per channel), "
                                  f"got {len(self.windows)}: {', '.join(self.windows)}")

    def resolved_windows(self) -> list[Window]:
        return [parse_window(spec) for spec in self.windows]

    def fingerprint(self) -> str:
        """A hash of everything that determines the pixels (windows by their width/level, not by name)."""
        fields = asdict(self)
        fields["windows"] = ([[w.width, w.level] for w in self.resolved_windows()]
                             if self.input == "windowed" else [])
        if self.input == "hu":
            fields["window_mode"] = None
        fields["version"] = SLICING_VERSION
        return stable_hash(fields)


@dataclass
class SliceInstances:
    """The instances of one scan: ``images [n, C, S, S]`` float32, the source slice of each instance and its
    window id (index into ``plan.windows``; -1 for stacked windows or HU input)."""

    images: np.ndarray
    slice_index: np.ndarray
    window_id: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


def select_slices(scan: Scan, plan: SlicePlan) -> np.ndarray:
    """Indices of the slices to embed: every ``slice_step``-th, or one per ``slice_spacing_mm`` of z extent
    (nearest slice to each multiple of the spacing; never fewer than one slice)."""
    n = scan.num_slices
    if n == 0:
        raise DataError(f"scan '{scan.scan_id}': volume has no slices")
    if plan.slice_spacing_mm is None:
        return np.arange(0, n, plan.slice_step, dtype=np.int64)
    dz = float(scan.spacing[0]) if scan.spacing[0] > 0 else 1.0
    positions = np.arange(0.0, (n - 1) * dz + 1e-6, plan.slice_spacing_mm)
    indices = np.clip(np.rint(positions / dz), 0, n - 1).astype(np.int64)
    return np.unique(indices)


def slice_instances(scan: Scan, plan: SlicePlan) -> SliceInstances:
    """Windowed (or HU) square images of the selected slices, ready for an encoder's normalisation."""
    indices = select_slices(scan, plan)
    slices = np.asarray(scan.volume[indices], dtype=np.float32)  # [k, H, W]
    if slices.ndim != 3:
        raise DataError(f"scan '{scan.scan_id}': expected a [z, y, x] volume, got shape {scan.volume.shape}")
    k = len(indices)
    size, channels = plan.image_size, plan.channels

    if plan.input == "hu":
        if scan.prewindowed:
            raise DataError(f"scan '{scan.scan_id}' holds pre-windowed images, not Hounsfield units; "
                            "an encoder with input 'hu' cannot read it")
        grey = _resize(_pad_square(slices, AIR_HU), size)  # [k, S, S]
        images = np.repeat(grey[:, None], channels, axis=1)
        return SliceInstances(images, indices, np.full(k, -1, dtype=np.int64))

    if scan.prewindowed:
        grey = _resize(_pad_square(np.clip(slices, 0.0, 1.0), 0.0), size)
        images = np.repeat(grey[:, None], channels, axis=1)
        return SliceInstances(np.clip(images, 0.0, 1.0), indices, np.zeros(k, dtype=np.int64))

    windows = plan.resolved_windows()
    padded = _pad_square(slices, AIR_HU)
    windowed = np.stack([w.apply(padded) for w in windows], axis=1)  # [k, n_win, H, W]
    nw = len(windows)
    resized = _resize(windowed.reshape(k * nw, *windowed.shape[2:]), size).reshape(k, nw, size, size)
    np.clip(resized, 0.0, 1.0, out=resized)
    if plan.window_mode == "stacked":
        return SliceInstances(np.ascontiguousarray(resized), indices, np.full(k, -1, dtype=np.int64))
    flat = resized.reshape(k * nw, 1, size, size)  # slice-major: slice0-w0, slice0-w1, ...
    images = np.repeat(flat, channels, axis=1) if channels > 1 else np.ascontiguousarray(flat)
    return SliceInstances(
        images,
        np.repeat(indices, nw),
        np.tile(np.arange(nw, dtype=np.int64), k),
    )


def _pad_square(slices: np.ndarray, fill: float) -> np.ndarray:
    """Centre-pad ``[k, H, W]`` to square so resizing keeps the aspect ratio."""
    h, w = slices.shape[1:]
    if h == w:
        return slices
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.full((slices.shape[0], side, side), fill, dtype=np.float32)
    out[:, top:top + h, left:left + w] = slices
    return out


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[n, H, W]`` square images to ``[n, size, size]`` (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return np.ascontiguousarray(images, dtype=np.float32)
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    shrinking = images.shape[-1] > size
    with torch.no_grad():
        out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                            antialias=shrinking)
    return out[:, 0].numpy()
