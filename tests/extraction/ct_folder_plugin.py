"""A local clear-bench plugin for the extraction tests: a source of NIfTI scans in a folder, read with
SimpleITK, a task whose labels come from ``labels.csv`` in that folder (``image,label``), and two small
random-init convolutional encoders (2D slices and 3D volumes) that import torch alone."""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from clear_bench import hookimpl
from clear_bench.data.scan import Scan
from clear_bench.errors import DataError
from clear_bench.specs import (
    Encoder,
    EncoderSpec,
    Option,
    Preprocessing,
    SourceSpec,
    TaskData,
    TaskSpec,
)


class NiftiFolderSource:
    """Scans ``<id>.nii.gz`` of a folder; fingerprint = sha256 of the file bytes."""

    name = "nifti-folder"

    def __init__(self, folder: str | Path, delay_s: float = 0.0) -> None:
        self.folder = Path(folder)
        self.delay_s = delay_s

    def scan_ids(self) -> list[str]:
        return sorted(p.name[: -len(".nii.gz")] for p in self.folder.glob("*.nii.gz"))

    def path(self, scan_id: str) -> Path:
        return self.folder / f"{scan_id}.nii.gz"

    def load(self, scan_id: str) -> Scan:
        path = self.path(scan_id)
        time.sleep(self.delay_s)  # a slow disk, for tests that must interrupt a run midway
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise DataError(f"{path}: cannot read as NIfTI ({str(exc).strip().splitlines()[-1]})") from None
        sx, sy, sz = image.GetSpacing()
        return Scan(scan_id, sitk.GetArrayFromImage(image).astype(np.float32), spacing=(sz, sy, sx))

    def fingerprint(self, scan_id: str) -> str:
        return hashlib.sha256(self.path(scan_id).read_bytes()).hexdigest()


def _source(options: Mapping[str, Any]) -> NiftiFolderSource:
    return NiftiFolderSource(options["folder"], float(options.get("delay_s") or 0.0))


def _task(options: Mapping[str, Any]) -> TaskData:
    source = _source(options)
    with open(Path(options["folder"]) / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = {row["image"]: np.array([int(row["label"])]) for row in rows}
    return TaskData(label_names=["label"], labels=labels, source=source)


_OPTIONS = {"folder": Option(Path, None, "folder of <id>.nii.gz scans", required=True),
            "delay_s": Option((float, int), 0.0, "seconds to sleep before reading each scan")}


@hookimpl
def clear_bench_sources() -> list[SourceSpec]:
    return [SourceSpec("nifti-folder", _source, "NIfTI scans of a folder", options=_OPTIONS)]


@hookimpl
def clear_bench_tasks() -> list[TaskSpec]:
    return [TaskSpec("folder-labels", "binary", _task, description="labels.csv beside the scans",
                     options=_OPTIONS)]


def _tiny_cnn(options: Mapping[str, Any], *, volume: bool = False) -> Encoder:
    if options["weights"] != "random":
        raise DataError("tiny-cnn has no pretrained weights; set weights: random")
    conv, pool = (nn.Conv3d, nn.AdaptiveAvgPool3d) if volume else (nn.Conv2d, nn.AdaptiveAvgPool2d)
    width = int(options["width"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(options["seed"]))
        model = nn.Sequential(conv(3, 8, 3, stride=2, padding=1), nn.GELU(),
                              conv(8, width, 3, stride=2, padding=1), nn.GELU(), pool(1), nn.Flatten())
    name = "tiny-cnn3d" if volume else "tiny-cnn"
    return Encoder(name=name, model=model.eval(), embed_dim=width, preprocessing=Preprocessing(image_size=32),
                   weights_digest=f"random-init:{options['seed']}",
                   input_kind="volume" if volume else "slice", random_init=True)


_CNN_OPTIONS = {"weights": Option(str, "random", "only 'random'", choices=("random",)),
                "seed": Option(int, 0, "seed of the random initialisation"),
                "width": Option(int, 16, "embedding width")}


@hookimpl
def clear_bench_encoders() -> list[EncoderSpec]:
    return [EncoderSpec("tiny-cnn", _tiny_cnn, options=_CNN_OPTIONS, description="two conv layers (test)"),
            EncoderSpec("tiny-cnn3d", lambda options: _tiny_cnn(options, volume=True), input_kind="volume",
                        options=_CNN_OPTIONS, description="two 3D conv layers (test)")]
