"""LeCL pretraining: MoCo v3 with lesion-enhanced sampling and loss, single process or DDP under torchrun.

Modules: :mod:`.config` (YAML schema), :mod:`.data` (slices, views, batch plan), :mod:`.loss`,
:mod:`.model` (MoCo v3), :mod:`.train` (the loop), :mod:`.state` (training-state checkpoints),
:mod:`.logs` (loss CSV and curve), :mod:`.cli` (``clear-bench pretrain lecl``).
"""

from __future__ import annotations

from clear_bench.specs import PretrainerSpec


def pretrainer_specs() -> list[PretrainerSpec]:
    """The ``lecl`` pretrainer (imports torch only when it runs)."""
    from clear_bench_lecl.pretrain import cli

    return [
        PretrainerSpec(
            name="lecl",
            add_arguments=cli.add_arguments,
            run=cli.run,
            description="LeCL / MoCo v3 contrastive pretraining of a ViT, MambaOut or VMamba slice encoder "
            "(lesion-centred views and lesion-weighted loss); DDP under torchrun",
        )
    ]
