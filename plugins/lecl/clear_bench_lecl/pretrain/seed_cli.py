"""The public CLEAR code's command line (``main_moco.py``'s flags) as a pretraining recipe.

``clear-bench pretrain lecl --data DIR --df-path CSV --arch vit_conv_base --sampling Lesion`` needs no
YAML: the flags set the keys of :data:`PUBLIC_RECIPE` (the public code's own defaults) and the data come from
the :mod:`.seed_layout` source over ``DIR``. Without ``--config`` the run also names its training states as
the public code does, ``{arch}-moco-lecl-1-{name}-checkpoint_{epoch:04d}.pth.tar`` (``{name}``:
``--name-add``, default ``exp-ps``), and keeps every one of them. With ``--config`` the same flags set keys of
that recipe instead (``--data`` then replaces its data source).

Imports no torch (the options are declared when the plugin is listed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_bench.errors import ConfigError
from clear_bench.schema import Option, Options
from clear_bench_lecl.archs import ARCHS
from clear_bench_lecl.pretrain.seed_layout import SOURCE_NAME

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PUBLIC_NAME = "exp-ps"
"""``--name-add``'s default in the public code."""

SEED_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    # MoCo v3's ViT-Small has 12 heads, timm's 6: same weights' shapes, other features. Its ViTs (conv stem
    # or not) use the fixed sin-cos position embedding.
    "vit_small": ("vit_small_patch16", {"num_heads": 12, "pos_embed": "sincos"}),
    "vit_base": ("vit_base_patch16", {"pos_embed": "sincos"}),
    "vit_conv_small": ("vit_conv_small", {}),
    "vit_conv_base": ("vit_conv_base", {}),
    "mambaout": ("mambaout_tiny", {}),  # the public code's MambaOut() is MambaOut-Tiny's configuration
    "vmamba": ("vmamba_clear", {}),  # the public code's VSSM() with its defaults
}
"""The public code's ``--arch`` names -> this project's arch and the ``arch_kwargs`` that make it equal."""

PUBLIC_RECIPE: dict[str, Any] = {
    "experiment": PUBLIC_NAME,
    "sampling": "lesion",
    "data": {"source": SOURCE_NAME, "options": {}},
    "model": {"arch": "vit_conv_base", "image_size": 224, "channels": 3, "mean": IMAGENET_MEAN,
              "std": IMAGENET_STD, "dim": 256, "mlp_dim": 4096, "stop_grad_patch_embed": False},
    "augment": {"crop_min": 0.08, "blur": [1.0, 0.1], "solarize": [0.0, 0.2], "hflip": 0.5, "vflip": 0.0,
                "jitter": 0.4},
    "loss": {"name": "lecl", "sample_weight": 1.0, "temperature": 1.0, "scale_by_2tau": True},
    "optim": {"epochs": 100, "batch_size": 4096, "base_lr": 1.0e-4, "weight_decay": 1.0e-6,
              "warmup_epochs": 10.0, "momentum": 0.99, "momentum_cosine": False},
    "runtime": {"keep_checkpoints": 0},
}
"""The public CLEAR code's settings (``main_moco.py``'s defaults: vit_conv_base at 224 px, batch 4096, base
lr 1e-4, weight decay 1e-6, 10 warm-up epochs, constant momentum 0.99, tau 1.0, lambda 1, colour jitter
0.4, ImageNet normalisation) with this project's paper-form LeCL loss (``--loss lecl-reference`` for the
public code's form)."""

_PUBLIC_WARMUP = PUBLIC_RECIPE["optim"]["warmup_epochs"]

SEED_FLAGS: dict[str, tuple[str, Option]] = {
    "data": ("data.options.root", Option(
        Path, None, "the public code's DIR: a folder of PNG slices (DeepLesion Images_png style); with no "
        f"--config, trains on it with the public code's settings (source {SOURCE_NAME})")),
    "df_path": ("data.options.lesions", Option(
        Path, None, "lesion CSV: File_name,Bounding_boxes (e.g. DeepLesion's DL_info.csv) or "
        "image,lesion_present,patient_id")),
    "name_add": ("experiment", Option(
        str, None, f"the public code's model name part (default {PUBLIC_NAME}): training states "
        "{arch}-moco-lecl-1-{name}-checkpoint_{epoch:04d}.pth.tar")),
    "image_size": ("model.image_size", Option(int, None, "input side of the views (default 224)")),
    "crop_min": ("augment.crop_min", Option(float, None, "minimum random-resized-crop scale (default 0.08)")),
    "moco_t": ("loss.temperature", Option(float, None, "softmax temperature tau (default 1.0)")),
    "moco_m": ("optim.momentum", Option(float, None, "momentum-encoder EMA (default 0.99)")),
    "moco_m_cos": ("optim.momentum_cosine", Option(
        bool, None, "raise the momentum to 1 along a half-cosine (default off)")),
    "moco_dim": ("model.dim", Option(int, None, "output size of projector and predictor (default 256)")),
    "moco_mlp_dim": ("model.mlp_dim", Option(int, None, "hidden size of their MLPs (default 4096)")),
    "weight_decay": ("optim.weight_decay", Option(float, None, "AdamW weight decay (default 1e-6)")),
    "warmup_epochs": ("optim.warmup_epochs", Option(float, None, "linear warm-up epochs (default 10)")),
    "stop_grad_conv1": ("model.stop_grad_patch_embed", Option(
        bool, None, "freeze the random patch embedding (default off)")),
    "workers": ("runtime.num_workers", Option(int, None, "DataLoader workers (default 0)")),
}
"""The public code's flags that are not already options of the pretrainer: name -> (recipe key, option)."""

SEED_OPTIONS: Options = {name: option for name, (_, option) in SEED_FLAGS.items()}

SAMPLING_CHOICES = ("lesion", "none", "Lesion", "None")

NEEDS_RECIPE = ("lecl: give a pretraining recipe (--config FILE; see benchmarks/pretrain/) or the public "
                "CLEAR code's flags (--data DIR [--df-path CSV] [--arch ...]; see docs/from-clear.md)")


@dataclass
class SeedRun:
    """What :func:`seed_settings` makes of the flags: the pretrainer's own options, the recipe keys the
    public code's flags set (key -> (flag label, value)), the recipe to start from (``None``: the file's)
    and lines to print."""

    options: dict[str, Any]
    settings: dict[str, tuple[str, Any]] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def flag_label(name: str, key_path: str) -> str:
    """How a problem names a flag: ``moco_t (--moco-t, sets loss.temperature)``."""
    return f"{name} (--{name.replace('_', '-')}, sets {key_path})"


def seed_settings(options: Mapping[str, Any] | None, *, has_config: bool) -> SeedRun:
    """Split ``options`` (the pretrainer's options plus :data:`SEED_OPTIONS`) into what the recipe loader
    takes. Without a recipe file ``--data`` is required and :data:`PUBLIC_RECIPE` is the start."""
    given = {key: value for key, value in (options or {}).items() if value is not None}
    seed = {key: given.pop(key) for key in list(given) if key in SEED_FLAGS}
    if not has_config and "data" not in seed:
        raise ConfigError(NEEDS_RECIPE)
    run = SeedRun(given)
    if "sampling" in given:
        given["sampling"] = str(given["sampling"]).lower()
    typed_arch = given.get("arch")
    if typed_arch is not None:
        _map_arch(typed_arch, run)
    for name, value in seed.items():
        if name not in ("data", "df_path"):
            key_path = SEED_FLAGS[name][0]
            run.settings[key_path] = (flag_label(name, key_path), value)
    if "data" in seed:  # the folder replaces the recipe's data source and all its options
        label = flag_label("data", "data.source and data.options")
        source_options = {"root": seed["data"], **({"lesions": seed["df_path"]} if "df_path" in seed else {})}
        run.settings["data.source"] = (label, SOURCE_NAME)
        run.settings["data.options"] = (label, source_options)
        if "df_path" not in seed:
            run.notes.append("note: no --df-path: no slice has a lesion, every slice gives two random "
                             "resized crops")
    elif "df_path" in seed:
        raise ConfigError("lecl: --df-path needs --data DIR (the folder of PNG slices it describes)")
    if has_config:
        return run

    run.recipe = PUBLIC_RECIPE
    if given.get("sampling") == "none" and "loss" not in given:
        given["loss"] = "infonce"  # the public code's --sampling None trains plain MoCo v3
    arch = typed_arch or PUBLIC_RECIPE["model"]["arch"]
    name = seed.get("name_add", PUBLIC_NAME)
    run.settings["runtime.checkpoint_stem"] = ("checkpoint names", seed_stem(arch, name))
    epochs = given.get("epochs", PUBLIC_RECIPE["optim"]["epochs"])
    if "warmup_epochs" not in seed and epochs < _PUBLIC_WARMUP:
        run.settings["optim.warmup_epochs"] = ("warm-up", float(epochs))
        run.notes.append(f"note: the public code's {_PUBLIC_WARMUP:g} warm-up epochs exceed --epochs "
                         f"{epochs}; warming up over {epochs} (set --warmup-epochs to choose)")
    loss = given.get("loss", PUBLIC_RECIPE["loss"]["name"])
    if loss == "lecl":
        run.notes.append("note: loss lecl (the paper's form); --loss lecl-reference reproduces the public "
                         "code's form")
    return run


def seed_stem(arch: str, name: str) -> str:
    """``{arch}-moco-lecl-1-{name}``: the public code names every run ``lecl-1`` (``mode`` there)."""
    return f"{arch}-moco-lecl-1-{name}"


def _map_arch(arch: str, run: SeedRun) -> None:
    if arch in SEED_ARCHS:
        ours, kwargs = SEED_ARCHS[arch]
        run.options["arch"] = ours
        for key, value in kwargs.items():
            run.settings[f"model.arch_kwargs.{key}"] = (f"arch {arch} (--arch)", value)
    elif arch not in ARCHS:
        public = ", ".join(f"{name} (= {ours})" for name, (ours, _) in SEED_ARCHS.items())
        raise ConfigError(f"lecl: --arch {arch} is not available; the public code's names: {public}; "
                          f"this project's: {', '.join(ARCHS)}")
