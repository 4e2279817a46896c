"""A local plugin for the hardening tests: ``slow-probe``, a non-learned slice encoder (the mean HU of a
4 x 4 grid, / 1000) that can be made slow and can hold a start barrier, so that two runs are sure to
embed at the same time. Neither the delay nor the barrier changes an embedding, so neither enters the
encoder's options (nor the cache key). ``slow-mean``, the built-in mean-pool head whose forward can be
made slow, so that a test can stop a cross-validation between two of its rows."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clear_bench import hookimpl
from clear_bench.aggregators.meanpool import MeanPool
from clear_bench.specs import (
    AggregatorOutput,
    AggregatorSpec,
    Encoder,
    EncoderSpec,
    Option,
    Preprocessing,
    resolve_options,
)

OPTIONS = {
    "image_size": Option(int, 16, "slices are resized to this size"),
    "delay_s": Option((float, int), 0.0, "seconds each forward call sleeps"),
    "barrier": Option(str, None, "folder: the build waits until `parties` processes have arrived there"),
    "parties": Option(int, 2, "processes the barrier waits for"),
}


class GridMeans(torch.nn.Module):
    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) / 1000.0


def _wait_at_barrier(folder: Path, parties: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while len(list(folder.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {folder}: {parties} processes did not arrive")
        time.sleep(0.05)


def build(options: Mapping[str, Any]) -> Encoder:
    values = resolve_options(OPTIONS, options)
    if values["barrier"]:
        _wait_at_barrier(Path(values["barrier"]), int(values["parties"]))
    size = int(values["image_size"])
    return Encoder(name="slow-probe", model=GridMeans(float(values["delay_s"])).eval(), embed_dim=16,
                   preprocessing=Preprocessing(image_size=size, input="hu", channels=1, mean=(0.0,),
                                               std=(1.0,)),
                   weights_digest="none", options={"image_size": size})


@hookimpl
def clear_bench_encoders() -> list[EncoderSpec]:
    return [EncoderSpec("slow-probe", build, embed_dim=16, weights_source="none (non-learned)",
                        description="grid means of the slice (test)", options=OPTIONS)]


class SlowMeanPool(MeanPool):
    def __init__(self, in_dim: int, n_outputs: int, delay_s: float = 0.0, **options: Any) -> None:
        super().__init__(in_dim, n_outputs, **options)
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> AggregatorOutput:
        time.sleep(self.delay_s)
        return super().forward(x, mask)


def build_slow_mean(in_dim: int, n_outputs: int, options: Mapping[str, Any]) -> torch.nn.Module:
    return SlowMeanPool(in_dim, n_outputs, **options)


@hookimpl
def clear_bench_aggregators() -> list[AggregatorSpec]:
    return [AggregatorSpec("slow-mean", build_slow_mean, "mean-pool whose forward sleeps (test)",
                           options={"delay_s": Option((float, int), 0.0, "seconds each forward call sleeps"),
                                    "hidden_dim": Option(int, 16, "projection width"),
                                    "dropout": Option((float, int), 0.0, "dropout after the projection")})]
