"""The pretraining recipe (YAML): its declared options, defaults, overrides and validation.

Each key of the recipe is declared once, as an :class:`~clear_bench.schema.Option` field of its section's
dataclass (type, default, help, choices), and checked by the core's option schema; the pretrainer's own
options (:data:`RUN_OPTIONS`: ``clear-bench pretrain lecl --epochs 3``, or ``pretrain: {options: {epochs:
3}}`` in a benchmark YAML) are derived from those declarations and set the keys named in
:data:`OVERRIDES`. Every problem is reported on its own line, all of them together:

* in the recipe, with its file, line and key:
  ``benchmarks/pretrain/cpu.yaml:12: optim.base_lr: expected float, got str 'fast'``;
* in an override, naming the option, its flag and the key it sets (the run cannot tell whether it came
  from the command line or a benchmark YAML):
  ``options: batch_size (--batch-size, sets optim.batch_size): must be > 0, got 0``.

Paths inside the recipe are relative to its folder; an output folder given to the run, to the working folder.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clear_bench.cache import safe_filename
from clear_bench.errors import ConfigError
from clear_bench.schema import (
    INVALID,
    Option,
    Options,
    Problems,
    check_mapping,
    check_value,
    describe,
    read_yaml,
    suggest,
)
from clear_bench.specs import stable_hash
from clear_bench_lecl.archs import ARCHS, MAMBAOUT_EMBEDDINGS, VIT_POS_EMBEDS, family

LOSS_VARIANTS = ("lecl", "lecl-reference", "infonce")
"""The contrastive losses of :mod:`.loss`, declared here so that declaring the options imports no torch."""
_ARCH_CHOICES = {"embedding": ("mambaout", MAMBAOUT_EMBEDDINGS), "pos_embed": ("vit", VIT_POS_EMBEDS)}

NULL = type(None)


def _option(kind: type | tuple[type, ...], default: Any, help: str,
            choices: Sequence[Any] | None = None) -> Any:
    """A dataclass field declared by its :class:`Option`: the default is written once, here."""
    option = Option(kind, default, help, choices)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"option": option})
    return field(default=default, metadata={"option": option})


def declared_options(cls: type) -> dict[str, Option]:
    """The recipe keys a dataclass declares, each with its :class:`Option`."""
    return {f.name: f.metadata["option"] for f in fields(cls) if "option" in f.metadata}


@dataclass(frozen=True)
class DataConfig:
    source: str = _option(str, "synthetic", "registered scan source (clear-bench plugins lists them)")
    options: Mapping[str, Any] = _option(dict, {}, "the source's own options")
    scan_range: Sequence[int] | None = _option((list, NULL), None,
                                               "[start, stop] of the source's scan ids (default: all)")
    windows: Sequence[str] = _option(list, ["soft-tissue", "lung", "bone"],
                                     "HU windows: preset names or 'W<width>L<level>'")
    window_mode: str = _option(str, "per-window",
                               "one grey image per window (CLEAR), or windows stacked as channels",
                               ("per-window", "stacked"))
    slice_step: int = _option(int, 1, "keep every k-th axial slice")
    keep_lesion_slices: bool = _option(bool, True, "also keep every slice with a lesion box")
    slice_size: int | None = _option((int, NULL), None,
                                     "one fixed side for every stored slice (default: each slice at its "
                                     "native resolution, up to data.native_max_size)")
    store: str = _option(str, "disk",
                         "disk: a memory-mapped slice store built once per node and data, shared by its "
                         "ranks and loader workers and reused by later runs; memory: a table in each "
                         "process's RAM (small runs)", ("disk", "memory"))
    store_dir: str | None = field(
        default=None,
        metadata={"option": Option(Path, None, "folder of the disk stores, one subfolder per data "
                                   "fingerprint (default: <clear-bench cache>/pretrain-slices)",
                                   must_exist=False)},
    )
    native_max_size: int = _option(int, 512,
                                   "slices stored at native resolution are downsampled to this side where "
                                   "larger; views are cut from them, then resized to model.image_size")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = _option(str, "vit_small_patch16", "backbone architecture (vit_*, mambaout_*, vmamba_*)")
    arch_kwargs: Mapping[str, Any] = _option(
        dict, {}, "overrides of the architecture's defaults (e.g. depth, embed_dim)")
    image_size: int = _option(int, 224, "input side of the views")
    channels: int = _option(int, 3, "input channels (grey slices are repeated)")
    mean: Sequence[float] = _option(list, [0.5, 0.5, 0.5],
                                    "normalisation mean per channel (after windowing to [0, 1])")
    std: Sequence[float] = _option(list, [0.5, 0.5, 0.5], "normalisation std per channel")
    dim: int = _option(int, 256, "output size of projector and predictor")
    mlp_dim: int = _option(int, 4096, "hidden size of projector and predictor")
    proj_layers: int = _option(int, 3, "projector layers (MoCo v3 ViT: 3)")
    pred_layers: int = _option(int, 2, "predictor layers (MoCo v3: 2)")
    stop_grad_patch_embed: bool = _option(bool, False,
                                          "freeze the patch embedding's final projection at its random init "
                                          "(MoCo v3's ViT trick; a conv stem's convs keep training)")
    embedding: str | None = _option(
        (str, NULL), None, "MambaOut only: what the projector sees and the encoder embeds: pooled (mean over "
        "space + head.norm, the public code's; the default) or pre-logits (timm's MLP head, 4x wider)",
        MAMBAOUT_EMBEDDINGS)
    pos_embed: str | None = _option(
        (str, NULL), None, "ViT only: learned (timm) or sincos (MoCo v3's fixed 2D sin-cos table and init); "
        "default sincos for vit_conv_*, learned otherwise", VIT_POS_EMBEDS)

    def backbone_kwargs(self) -> dict[str, Any]:
        """``arch_kwargs`` with ``embedding`` / ``pos_embed`` added where set (checked by the recipe)."""
        kwargs = dict(self.arch_kwargs)
        for key in ("embedding", "pos_embed"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        return kwargs


@dataclass(frozen=True)
class AugmentConfig:
    crop_min: float = _option(float, 0.08,
                              "minimum crop area (random resized crop); lesion crops side >= sqrt of it")
    blur: Sequence[float] = _option(list, [1.0, 0.1], "Gaussian blur probability for view 1 and view 2")
    solarize: Sequence[float] = _option(list, [0.0, 0.2], "solarisation probability for view 1 and view 2")
    hflip: float = _option(float, 0.5, "horizontal flip probability")
    vflip: float = _option(float, 0.0, "vertical flip probability")
    jitter: float = _option(float, 0.0, "brightness/contrast jitter strength (0: none, the CT default)")


@dataclass(frozen=True)
class LossSettings:
    name: str = _option(str, "lecl", "lecl (paper form), lecl-reference (public code's form) or infonce",
                        LOSS_VARIANTS)
    sample_weight: float = _option(float, 1.0,
                                   "lambda: extra weight of other lesion slices in the denominator")
    temperature: float = _option(float, 0.2, "tau (MoCo v3 ViT: 0.2)")
    scale_by_2tau: bool = _option(bool, True, "multiply the loss by 2 tau, as MoCo v3 does")


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = _option(int, 100, "passes over the slices")
    batch_size: int = _option(int, 256, "global batch (all ranks, all accumulation steps)")
    accum_steps: int = _option(int, 1, "gradient accumulation steps per optimizer step")
    base_lr: float = _option(float, 1.5e-4, "lr = base_lr x batch_size / 256 (MoCo v3 ViT: 1.5e-4)")
    weight_decay: float = _option(float, 0.1, "AdamW weight decay (MoCo v3 ViT: 0.1)")
    warmup_epochs: float = _option(float, 10.0, "linear warm-up length, then half-cosine to 0")
    momentum: float = _option(float, 0.99, "momentum-encoder EMA at step 0")
    momentum_cosine: bool = _option(bool, True, "raise the momentum to 1 along a half-cosine (MoCo v3)")
    precision: str = _option(str, "auto", "autocast: bf16, fp32, or auto (bf16 where supported)",
                             ("auto", "bf16", "fp32"))
    clip_grad: float | None = _option((float, NULL), None, "clip the gradient norm at this value")


@dataclass(frozen=True)
class RuntimeConfig:
    output_dir: str | None = field(
        default=None,
        metadata={"option": Option(Path, None, "where checkpoints and logs go (default: "
                                   "runs/pretrain/<experiment>)", must_exist=False)},
    )
    checkpoint_every_steps: int = _option(int, 0,
                                          "write the training state every N steps (0: at each epoch end)")
    keep_checkpoints: int = _option(int, 2, "training-state checkpoints kept (the newest); 0 keeps all")
    max_steps: int | None = _option((int, NULL), None,
                                    "stop (with a checkpoint) after this many steps; resume later")
    num_workers: int = _option(int, 0, "DataLoader workers (0: augment in the training process)")
    threads: int | None = _option((int, NULL), None,
                                  "torch CPU threads per process (default: torch's choice)")
    device: str = _option(str, "auto", "auto, cpu or cuda", ("auto", "cpu", "cuda"))
    progress: bool = _option(bool, True, "show a progress bar")
    checkpoint_stem: str | None = _option((str, NULL), None, "file-name stem of the training states (default "
                                          "{arch}-moco-{mode}-{experiment})")


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "loss": LossSettings,
    "optim": OptimConfig,
    "runtime": RuntimeConfig,
}


@dataclass(frozen=True)
class PretrainConfig:
    """A validated pretraining run."""

    experiment: str = _option(str, "lecl", "name used in checkpoint file names")
    seed: int = _option(int, 0, "seed of initialisation, batch order and augmentation")
    sampling: str = _option(str, "lesion", "lesion: LeCL lesion-centred views; none: plain MoCo v3 views",
                            ("lesion", "none"))
    lesion_oversample: float = _option(float, 1.0, "how often each lesion slice is seen per epoch (>= 1)")
    plugins: Sequence[str] = _option(list, [],
                                     "local plugin files or folders (e.g. one providing the scan source)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossSettings = field(default_factory=LossSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    path: str | None = None

    @property
    def mode(self) -> str:
        """``lecl`` unless this is plain MoCo v3 (no lesion sampling and the InfoNCE loss)."""
        return "mocov3" if self.sampling == "none" and self.loss.name == "infonce" else "lecl"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def training_fingerprint(self) -> str:
        """Hash of everything that determines the trained weights (not where or how often it logs)."""
        return stable_hash(training_values(self.to_dict()))


def training_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a config's :meth:`~PretrainConfig.to_dict` that determine the trained weights:
    all but its file path and ``runtime`` (where and how it runs: device, threads, output... may change on
    resume). Both the fingerprint and the resume-time comparison use it."""
    kept = {key: value for key, value in values.items() if key not in ("path", "runtime")}
    if isinstance(kept.get("data"), Mapping):  # where the slices are kept does not change them
        kept["data"] = {key: value for key, value in kept["data"].items() if key not in STORAGE_KEYS}
    return kept


STORAGE_KEYS = ("store", "store_dir")
"""``data`` keys that say where the slices are kept, not what they are (left out of the fingerprint)."""


RECIPE: Options = {
    **declared_options(PretrainConfig),
    **{name: Option((dict, NULL), None, f"the {name} section") for name in SECTIONS},
}
"""The recipe's top-level keys."""

_PLUGIN_PATH = Option(Path, None, "a local plugin file or folder")

OVERRIDES = {
    "experiment": "experiment",
    "arch": "model.arch",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.base_lr",
    "sampling": "sampling",
    "sample_weight": "loss.sample_weight",
    "loss": "loss.name",
    "seed": "seed",
    "max_steps": "runtime.max_steps",
    "checkpoint_every": "runtime.checkpoint_every_steps",
    "threads": "runtime.threads",
    "num_workers": "runtime.num_workers",
    "device": "runtime.device",
    "progress": "runtime.progress",
}
"""The pretrainer's options (``--batch-size``, ``options: {batch_size: ...}``) -> the recipe key each sets."""


def _recipe_option(key_path: str) -> Option:
    *section, key = key_path.split(".")
    return declared_options(SECTIONS[section[0]] if section else PretrainConfig)[key]


def _override_option(key_path: str) -> Option:
    """The option that sets ``key_path``: the key's own type, help and choices; no default (the recipe's)."""
    option = _recipe_option(key_path)
    kinds = tuple(kind for kind in option.types() if kind is not NULL)
    kind = kinds[0] if len(kinds) == 1 else kinds
    return Option(kind, None, f"{option.help} (sets {key_path})", option.choices)


RUN_OPTIONS: Options = {name: _override_option(key_path) for name, key_path in OVERRIDES.items()}
"""The options the ``lecl`` pretrainer declares: its ``--flags``, and a benchmark YAML ``pretrain:`` entry's
``options:``."""


def override_label(name: str) -> str:
    """How a problem names an override: ``batch_size (--batch-size, sets optim.batch_size)``."""
    flag = "--" + name.replace("_", "-")
    return f"{name} ({flag}, sets {OVERRIDES[name]})" if name in OVERRIDES else name


def load_config(path: str | Path | None, options: Mapping[str, Any] | None = None, *,
                output: str | Path | None = None, recipe: Mapping[str, Any] | None = None,
                settings: Mapping[str, tuple[str, Any]] | None = None) -> PretrainConfig:
    """Read the recipe ``path`` (``None``: the mapping ``recipe``, else defaults only), set the keys of
    ``settings`` (key path -> (the flag that set it, value), e.g. the public code's flags), the pretrainer
    ``options`` (names of :data:`RUN_OPTIONS`; ``None`` values are left to the recipe) and ``output``
    (``runtime.output_dir``, relative to the working folder), and validate.

    Raises :class:`ConfigError` with one line per problem.
    """
    data: Any = {} if recipe is None else recipe
    lines: dict[str, int] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        data, lines = read_yaml(path)
        base = path.parent
        data = {} if data is None else data
    where = str(path) if path is not None else "<defaults>" if recipe is None else "<built-in recipe>"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {describe(data)}")
    problems = _Located(Problems(where, lines))
    data = copy.deepcopy(data)
    for key_path, (label, value) in (settings or {}).items():
        if _set(data, key_path, copy.deepcopy(value)):
            problems.overridden[key_path] = label
    for name, value in _check_overrides(options, problems).items():
        if _set(data, OVERRIDES[name], value):
            problems.overridden[OVERRIDES[name]] = name
    if output is not None:
        _set(data, "runtime.output_dir", str(Path(output).expanduser().resolve()))

    recipe = problems.recipe
    top = _checked(data, RECIPE, "", recipe, base)
    sections = {}
    for name, cls in SECTIONS.items():
        sections[name] = _checked(top.pop(name, None) or {}, declared_options(cls), name, recipe, base)
    plugins = []
    for index, entry in enumerate(top.get("plugins", [])):
        resolved = check_value(entry, _PLUGIN_PATH, f"plugins[{index}]", recipe, base)
        if resolved is not INVALID:
            plugins.append(resolved)
    recipe.raise_if_any()

    config = PretrainConfig(
        **{**top, "plugins": tuple(plugins)},
        **{name: cls(**sections[name]) for name, cls in SECTIONS.items()},
        path=str(Path(path).resolve()) if path is not None else None,
    )
    _check_semantics(config, problems)
    recipe.raise_if_any()
    return config


def output_dir(config: PretrainConfig) -> Path:
    """The run folder: ``runtime.output_dir`` or ``runs/pretrain/<experiment>`` under the working folder."""
    if config.runtime.output_dir:
        return Path(config.runtime.output_dir)
    return Path.cwd() / "runs" / "pretrain" / safe_filename(config.experiment)


# --- checking ---------------------------------------------------------------------------------------


class _Located:
    """Reports each problem where its value came from: the recipe (file, line, key), or the override that
    set the key (see :func:`override_label`); one list of problems for both, in order."""

    def __init__(self, recipe: Problems) -> None:
        self.recipe = recipe
        self.options = Problems("options")
        self.options.items = recipe.items
        self.overridden: dict[str, str] = {}
        """Key path -> the name of the option that set it."""

    def add(self, key_path: str, message: str) -> None:
        name = self.overridden.get(key_path)
        if name is None:
            self.recipe.add(key_path, message)
        else:
            self.options.add(override_label(name), message)

    def origin(self, key_path: str) -> str:
        """``, from option NAME`` when an override set ``key_path`` (for messages quoting its value)."""
        name = self.overridden.get(key_path)
        return f", from option {name}" if name else ""


def _check_overrides(options: Mapping[str, Any] | None, problems: _Located) -> dict[str, Any]:
    """The given options, checked against :data:`RUN_OPTIONS` (the core has checked them already when they
    come from its command line or a benchmark YAML; a direct caller's are checked here)."""
    values = {}
    for name, value in (options or {}).items():
        if value is None:
            continue
        if name not in RUN_OPTIONS:
            problems.options.add(name, f"unknown option{suggest(name, RUN_OPTIONS)}; expected one of: "
                                       f"{', '.join(RUN_OPTIONS)}")
            continue
        checked = check_value(value, RUN_OPTIONS[name], override_label(name), problems.options)
        if checked is not INVALID:
            values[name] = checked
    return values


def _checked(given: Any, declared: Options, prefix: str, problems: Problems, base: Path) -> dict[str, Any]:
    """The checked keys of one mapping with the defaults of the missing ones, a fresh copy. A key set to
    null takes its default when that default is null; ints given for float keys become floats (so the
    fingerprint does not depend on ``1`` vs ``1.0``)."""
    given = {key: value for key, value in given.items()
             if not (value is None and key in declared and declared[key].default is None)}
    values = copy.deepcopy(check_mapping(given, declared, prefix, problems, base=base))
    for key, value in values.items():
        if declared[key].type is float and isinstance(value, int):
            values[key] = float(value)
    return values


def _check_semantics(c: PretrainConfig, problems: _Located) -> None:
    """What a type cannot say: ranges, lengths, divisibility, windows."""
    from clear_bench.data.windowing import parse_window

    def positive(key: str, value: float, allow_zero: bool = False) -> None:
        if not (value >= 0 if allow_zero else value > 0) or (isinstance(value, float) and math.isnan(value)):
            problems.add(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    for key, value in [
        ("optim.epochs", c.optim.epochs),
        ("optim.batch_size", c.optim.batch_size),
        ("optim.accum_steps", c.optim.accum_steps),
        ("optim.base_lr", c.optim.base_lr),
        ("model.image_size", c.model.image_size),
        ("model.channels", c.model.channels),
        ("model.dim", c.model.dim),
        ("model.mlp_dim", c.model.mlp_dim),
        ("model.proj_layers", c.model.proj_layers),
        ("model.pred_layers", c.model.pred_layers),
        ("data.slice_step", c.data.slice_step),
        ("loss.temperature", c.loss.temperature),
    ]:
        positive(key, value)
    for key, value in [
        ("optim.weight_decay", c.optim.weight_decay),
        ("optim.warmup_epochs", c.optim.warmup_epochs),
        ("loss.sample_weight", c.loss.sample_weight),
        ("runtime.checkpoint_every_steps", c.runtime.checkpoint_every_steps),
        ("runtime.keep_checkpoints", c.runtime.keep_checkpoints),
        ("runtime.num_workers", c.runtime.num_workers),
    ]:
        positive(key, value, allow_zero=True)
    if c.optim.warmup_epochs > c.optim.epochs:
        problems.add("optim.warmup_epochs",
                      f"longer than optim.epochs ({c.optim.epochs}{problems.origin('optim.epochs')})")
    if not 0.0 <= c.optim.momentum <= 1.0:
        problems.add("optim.momentum", f"must lie in [0, 1], got {c.optim.momentum}")
    if c.optim.batch_size % c.optim.accum_steps:
        problems.add(
            "optim.batch_size",
            f"{c.optim.batch_size} is not divisible by optim.accum_steps ({c.optim.accum_steps})",
        )
    if c.lesion_oversample < 1.0:
        problems.add("lesion_oversample", f"must be >= 1, got {c.lesion_oversample}")
    if not 0.0 < c.augment.crop_min <= 1.0:
        problems.add("augment.crop_min", f"must lie in (0, 1], got {c.augment.crop_min}")
    for key in ("blur", "solarize"):
        pair = getattr(c.augment, key)
        if len(pair) != 2 or not all(isinstance(p, int | float) and 0 <= p <= 1 for p in pair):
            problems.add(f"augment.{key}", f"expected two probabilities [view1, view2], got {pair!r}")
    for key in ("hflip", "vflip"):
        if not 0.0 <= getattr(c.augment, key) <= 1.0:
            problems.add(f"augment.{key}", f"must be a probability, got {getattr(c.augment, key)}")
    for key in ("mean", "std"):
        values = getattr(c.model, key)
        if len(values) != c.model.channels or not all(isinstance(v, int | float) for v in values):
            problems.add(
                f"model.{key}", f"expected {c.model.channels} numbers (model.channels), got {values!r}"
            )
    if any(isinstance(v, int | float) and v <= 0 for v in c.model.std):
        problems.add("model.std", "must be positive")
    if c.data.scan_range is not None and (
        len(c.data.scan_range) != 2 or not all(isinstance(v, int) for v in c.data.scan_range)
    ):
        problems.add("data.scan_range", f"expected [start, stop] (two integers), got {c.data.scan_range!r}")
    if not c.data.windows:
        problems.add("data.windows", "expected at least one window")
    for index, window in enumerate(c.data.windows):
        try:
            parse_window(window)
        except ConfigError as exc:
            problems.add(f"data.windows[{index}]", str(exc))
    if c.data.window_mode == "stacked" and len(c.data.windows) != c.model.channels:
        problems.add(
            "data.window_mode",
            f"stacked windows need one window per channel ({c.model.channels}), got {len(c.data.windows)}",
        )
    if c.data.slice_size is not None and c.data.slice_size < 8:
        problems.add("data.slice_size", f"must be >= 8, got {c.data.slice_size}")
    if c.data.native_max_size < 8:
        problems.add("data.native_max_size", f"must be >= 8, got {c.data.native_max_size}")
    if c.runtime.max_steps is not None and c.runtime.max_steps < 1:
        problems.add("runtime.max_steps", f"must be >= 1, got {c.runtime.max_steps}")
    if c.runtime.threads is not None and c.runtime.threads < 1:
        problems.add("runtime.threads", f"must be >= 1, got {c.runtime.threads}")
    _check_arch_choices(c.model, problems)


def _check_arch_choices(m: ModelConfig, problems: _Located) -> None:
    """``model.embedding`` / ``model.pos_embed`` (or the same keys in ``model.arch_kwargs``): known values,
    only for their family, and not set twice to different values."""
    kind = family(m.arch) if m.arch in ARCHS else None
    for key, (owner, choices) in _ARCH_CHOICES.items():
        field_value, kwarg = getattr(m, key), m.arch_kwargs.get(key)
        if kwarg is not None and kwarg not in choices:
            problems.add(f"model.arch_kwargs.{key}", f"expected one of {', '.join(choices)}, got {kwarg!r}")
        if field_value is not None and kwarg is not None and field_value != kwarg:
            problems.add(f"model.{key}", f"{field_value!r} contradicts model.arch_kwargs.{key} ({kwarg!r})")
        if kind is not None and kind != owner and (field_value is not None or kwarg is not None):
            where = f"model.{key}" if field_value is not None else f"model.arch_kwargs.{key}"
            problems.add(where, f"only for {owner} archs, but model.arch is {m.arch!r}")


def _set(data: dict[str, Any], key_path: str, value: Any) -> bool:
    """Set ``key_path`` in the raw recipe; False (and unchanged) where a parent is not a mapping, which is
    then reported as the recipe's own mistake."""
    node = data
    *parents, last = key_path.split(".")
    for key in parents:
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            return False
        node = node[key]
    node[last] = value
    return True
