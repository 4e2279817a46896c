"""Fixtures of the extraction tests: CT scans written as real NIfTI files, the local test plugin that reads
them (``ct_folder_plugin.py``) and tiny random-init encoders from the registered ``lecl-vit`` plugin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from clear_bench.components import build_encoder
from clear_bench.registry import Registry, load_registry
from clear_bench.specs import Encoder, ScanSource

PLUGIN = Path(__file__).with_name("ct_folder_plugin.py")
TINY_VIT = {"weights": "random", "arch": "vit_tiny_patch16", "img_size": 32, "arch_kwargs": {"depth": 2}}

torch.set_num_threads(1)


def synthetic_volume(seed: int, slices: int = 6, size: int = 40) -> np.ndarray:
    """A small HU volume: air around a soft-tissue body with a lung-like region and a bright 'bone'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = (yy - size / 2) ** 2 / (0.4 * size) ** 2 + (xx - size / 2) ** 2 / (0.45 * size) ** 2 < 1
    volume = np.full((slices, size, size), -1000.0, dtype=np.float32)
    for z in range(slices):
        sl = np.where(body, 40.0, -1000.0)
        lung = (yy - size * 0.45) ** 2 + (xx - size * (0.3 + 0.03 * z)) ** 2 < (size * 0.12) ** 2
        sl[lung & body] = -800.0
        sl[(yy - size * 0.7) ** 2 + (xx - size / 2) ** 2 < (size * 0.06) ** 2] = 700.0
        volume[z] = sl + rng.normal(0, 20, sl.shape)
    return volume


def write_scans(folder: Path, count: int, *, slices: int = 6, size: int = 40) -> list[str]:
    """``count`` NIfTI scans ``case000.nii.gz``... of ``slices`` to ``slices + 2`` slices; returns the ids."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(count):
        scan_id = f"case{index:03d}"
        image = sitk.GetImageFromArray(synthetic_volume(index, slices + index % 3, size).astype(np.int16))
        image.SetSpacing((0.8, 0.8, 2.5))
        sitk.WriteImage(image, str(folder / f"{scan_id}.nii.gz"))
        ids.append(scan_id)
    return ids


@pytest.fixture(scope="session")
def plugin_file() -> Path:
    """The local test plugin (source nifti-folder, task folder-labels, encoders tiny-cnn / tiny-cnn3d)."""
    return PLUGIN


@pytest.fixture(scope="session")
def scan_writer() -> Callable[..., list[str]]:
    return write_scans


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry([PLUGIN])


@pytest.fixture(scope="session")
def tiny_vit(registry: Registry) -> Callable[..., Encoder]:
    """``tiny_vit(seed=0, **options)``: a random-init 2-block ViT-Tiny at 32 px (``lecl-vit``)."""

    def make(seed: int = 0, **options: Any) -> Encoder:
        return build_encoder(registry.encoder("lecl-vit"), {**TINY_VIT, "seed": seed, **options})

    return make


@pytest.fixture
def folder_source(registry: Registry) -> Callable[..., ScanSource]:
    def make(folder: Path, **options: Any) -> ScanSource:
        return registry.source("nifti-folder").build({"folder": str(folder), **options})

    return make


@pytest.fixture
def scans(tmp_path: Path, folder_source: Callable[..., ScanSource]) -> tuple[ScanSource, list[str]]:
    """Five NIfTI scans of 6-8 slices at 40 px, and the source that reads them."""
    ids = write_scans(tmp_path / "scans", 5)
    return folder_source(tmp_path / "scans"), ids
