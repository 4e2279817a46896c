"""LeCL pretraining: MoCo v3 with lesion-enhanced sampling and loss, single process or DDP under torchrun.

Modules: :mod:`.config` (the recipe's declared options and the pretrainer's), :mod:`.data` (slices, views,
batch plan), :mod:`.loss`, :mod:`.model` (MoCo v3), :mod:`.train` (the loop), :mod:`.state` (training-state
checkpoints), :mod:`.logs` (loss CSV and curve). The core builds ``clear-bench pretrain lecl`` from
:func:`pretrainer_specs` and calls :func:`run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clear_bench.errors import ConfigError
from clear_bench.specs import PretrainerSpec
from clear_bench_lecl.pretrain.config import RUN_OPTIONS, load_config


def run(config: Path | None, output_dir: Path | None, *, resume: bool | Path | str = False,
        options: Mapping[str, Any] | None = None) -> Path | None:
    """Train with the recipe ``config``, the ``options`` of :data:`~.config.RUN_OPTIONS` setting its keys,
    into ``output_dir`` (``None``: the recipe's ``runtime.output_dir``).

    ``resume``: ``True`` continues from the newest training state of the output folder
    (``"if-present"``: when there is one), a path from that state file. Returns the final encoder
    checkpoint, or ``None`` when ``max_steps`` stopped the run before its end (a training state is then
    written; resume later).
    """
    if config is None:
        raise ConfigError("lecl: a pretraining recipe is required (--config FILE; see benchmarks/pretrain/)")
    from clear_bench_lecl.pretrain.train import run_pretraining  # torch: only when training

    recipe = load_config(config, options, output=output_dir)
    return run_pretraining(recipe, resume=resume or None)


def pretrainer_specs() -> list[PretrainerSpec]:
    """The ``lecl`` pretrainer (imports torch only when it runs)."""
    return [
        PretrainerSpec(
            name="lecl",
            run=run,
            options=RUN_OPTIONS,
            description="LeCL / MoCo v3 contrastive pretraining of a ViT, MambaOut or VMamba slice encoder "
            "(lesion-centred views and lesion-weighted loss); DDP under torchrun",
            config_required=True,
        )
    ]
