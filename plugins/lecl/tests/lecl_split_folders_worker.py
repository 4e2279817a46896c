"""One rank of a torchrun job whose ranks write to different output folders, as on nodes that share no
filesystem: ``python lecl_split_folders_worker.py RECIPE BASE RESUME`` trains ``RECIPE`` into
``BASE/rank{RANK}`` (``RESUME``: ``no``, ``if-present`` or ``latest``)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from clear_bench_lecl.pretrain.config import load_config
from clear_bench_lecl.pretrain.train import run_pretraining


def main() -> None:
    recipe, base, resume = sys.argv[1:4]
    config = load_config(recipe)
    folder = Path(base) / f"rank{os.environ['RANK']}"
    config = replace(config, runtime=replace(config.runtime, output_dir=str(folder)))
    chosen: str | bool | None = {"no": None, "if-present": "if-present", "latest": True}[resume]
    result = run_pretraining(config, resume=chosen)
    print(f"rank {os.environ['RANK']} finished: {result}", flush=True)


if __name__ == "__main__":
    main()
