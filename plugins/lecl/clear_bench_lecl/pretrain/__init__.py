"""LeCL pretraining: MoCo v3 with lesion-enhanced sampling and loss, single process or DDP under torchrun.

Modules: :mod:`.config` (the recipe's declared options and the pretrainer's), :mod:`.data` (slices, views,
batch plan), :mod:`.loss`, :mod:`.model` (MoCo v3), :mod:`.train` (the loop), :mod:`.state` (training-state
checkpoints), :mod:`.logs` (loss CSV and curve), :mod:`.seed_cli` (the public CLEAR code's flags as a
recipe) and :mod:`.seed_layout` (its training folder and lesion CSV as a scan source). The core builds
``clear-bench pretrain lecl`` from :func:`pretrainer_specs` and calls :func:`run`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clear_bench.schema import Option
from clear_bench.specs import PretrainerSpec
from clear_bench_lecl.pretrain.config import RUN_OPTIONS, load_config
from clear_bench_lecl.pretrain.seed_cli import SAMPLING_CHOICES, SEED_OPTIONS, seed_settings

CODE_VERSION = "lecl-pretrain-3"
"""Changed whenever training changes the encoder a recipe yields, so benchmarks train again instead of
reusing older checkpoints (2: fp32 loss under autocast, patch-projection-only stop-gradient, global-batch
conv-stem BatchNorm under CPU DDP; 3: MambaOut's projector on the pooled, normalised features, MoCo v3's
sin-cos position embedding and init for the vit_conv_* archs)."""

OPTIONS = {
    **SEED_OPTIONS,
    **RUN_OPTIONS,
    "sampling": Option(str, None, f"{RUN_OPTIONS['sampling'].help}; the public code's Lesion / None too",
                       SAMPLING_CHOICES),
}
"""The pretrainer's options: :data:`~.config.RUN_OPTIONS` and the public CLEAR code's flags
(:data:`~.seed_cli.SEED_OPTIONS`)."""


def run(config: Path | None, output_dir: Path | None, *, resume: bool | Path | str = False,
        options: Mapping[str, Any] | None = None) -> Path | None:
    """Train with the recipe ``config`` (``None``: the public CLEAR code's settings, which needs option
    ``data``), the ``options`` of :data:`OPTIONS` setting its keys, into ``output_dir`` (``None``: the
    recipe's ``runtime.output_dir``).

    ``resume``: ``True`` continues from the newest training state of the output folder
    (``"if-present"``: when there is one), a path from that state file. Returns the final encoder
    checkpoint, or ``None`` when ``max_steps`` stopped the run before its end (a training state is then
    written; resume later).
    """
    seed = seed_settings(options, has_config=config is not None)
    recipe = load_config(config, seed.options, output=output_dir, recipe=seed.recipe, settings=seed.settings)
    from clear_bench_lecl.pretrain.train import run_pretraining  # torch: only when training

    if os.environ.get("RANK", "0") == "0":  # once per job under torchrun
        for note in seed.notes:
            print(note, flush=True)
    return run_pretraining(recipe, resume=resume or None)


def pretrainer_specs() -> list[PretrainerSpec]:
    """The ``lecl`` pretrainer (imports torch only when it runs)."""
    return [
        PretrainerSpec(
            name="lecl",
            run=run,
            options=OPTIONS,
            description="LeCL / MoCo v3 contrastive pretraining of a ViT, MambaOut or VMamba slice encoder "
            "(lesion-centred views and lesion-weighted loss); DDP under torchrun. A recipe (--config) or "
            "the public CLEAR code's flags (--data DIR --df-path CSV --arch ...)",
            config_required=False,
            code_version=CODE_VERSION,
        )
    ]
