"""The pretraining YAML: schema, defaults, command-line overrides and validation.

Every problem is reported on its own line naming the file, the line and the key, e.g.
``benchmarks/pretrain/cpu.yaml:12: optim.base_lr: expected float, got 'fast'``. Paths inside the YAML are
relative to the YAML's folder.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clear_bench.config import read_yaml
from clear_bench.errors import ConfigError
from clear_bench.specs import stable_hash
from clear_bench_lecl.pretrain.loss import LOSS_VARIANTS

NUMBER = (float, int)


def _m(help: str, types: type | tuple[type, ...], choices: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """Field metadata: help text, accepted YAML types, allowed values."""
    return {"help": help, "types": types if isinstance(types, tuple) else (types,), "choices": choices}


@dataclass(frozen=True)
class DataConfig:
    source: str = field(
        default="synthetic", metadata=_m("registered scan source (clear-bench plugins lists them)", str)
    )
    options: dict = field(default_factory=lambda: {}, metadata=_m("the source's own options", dict))
    scan_range: list | None = field(
        default=None, metadata=_m("[start, stop] of the source's scan ids (default: all)", (list, type(None)))
    )
    windows: list = field(
        default_factory=lambda: ["soft-tissue", "lung", "bone"],
        metadata=_m("HU windows: preset names or 'W<width>L<level>'", list),
    )
    window_mode: str = field(
        default="per-window",
        metadata=_m(
            "one grey image per window (CLEAR), or windows stacked as channels",
            str,
            ("per-window", "stacked"),
        ),
    )
    slice_step: int = field(default=1, metadata=_m("keep every k-th axial slice", int))
    keep_lesion_slices: bool = field(
        default=True, metadata=_m("also keep every slice with a lesion box", bool)
    )
    slice_size: int | None = field(
        default=None,
        metadata=_m("side of the slices kept in memory (default: model.image_size)", (int, type(None))),
    )


@dataclass(frozen=True)
class ModelConfig:
    arch: str = field(
        default="vit_small_patch16", metadata=_m("backbone architecture (vit_*, mambaout_*, vmamba_*)", str)
    )
    arch_kwargs: dict = field(
        default_factory=lambda: {},
        metadata=_m("overrides of the architecture's defaults (e.g. depth, embed_dim)", dict),
    )
    image_size: int = field(default=224, metadata=_m("input side of the views", int))
    channels: int = field(default=3, metadata=_m("input channels (grey slices are repeated)", int))
    mean: list = field(
        default_factory=lambda: [0.5, 0.5, 0.5],
        metadata=_m("normalisation mean per channel (after windowing to [0, 1])", list),
    )
    std: list = field(
        default_factory=lambda: [0.5, 0.5, 0.5], metadata=_m("normalisation std per channel", list)
    )
    dim: int = field(default=256, metadata=_m("output size of projector and predictor", int))
    mlp_dim: int = field(default=4096, metadata=_m("hidden size of projector and predictor", int))
    proj_layers: int = field(default=3, metadata=_m("projector layers (MoCo v3 ViT: 3)", int))
    pred_layers: int = field(default=2, metadata=_m("predictor layers (MoCo v3: 2)", int))
    stop_grad_patch_embed: bool = field(
        default=False, metadata=_m("freeze the random patch embedding (MoCo v3's ViT trick)", bool)
    )


@dataclass(frozen=True)
class AugmentConfig:
    crop_min: float = field(
        default=0.08,
        metadata=_m("minimum crop area (random resized crop); lesion crops side >= sqrt of it", NUMBER),
    )
    blur: list = field(
        default_factory=lambda: [1.0, 0.1],
        metadata=_m("Gaussian blur probability for view 1 and view 2", list),
    )
    solarize: list = field(
        default_factory=lambda: [0.0, 0.2],
        metadata=_m("solarisation probability for view 1 and view 2", list),
    )
    hflip: float = field(default=0.5, metadata=_m("horizontal flip probability", NUMBER))
    vflip: float = field(default=0.0, metadata=_m("vertical flip probability", NUMBER))
    jitter: float = field(
        default=0.0, metadata=_m("brightness/contrast jitter strength (0: none, the CT default)", NUMBER)
    )


@dataclass(frozen=True)
class LossSettings:
    name: str = field(
        default="lecl",
        metadata=_m("lecl (paper form), lecl-reference (public code's form) or infonce", str, LOSS_VARIANTS),
    )
    sample_weight: float = field(
        default=1.0, metadata=_m("lambda: extra weight of other lesion slices in the denominator", NUMBER)
    )
    temperature: float = field(default=0.2, metadata=_m("tau (MoCo v3 ViT: 0.2)", NUMBER))
    scale_by_2tau: bool = field(
        default=True, metadata=_m("multiply the loss by 2 tau, as MoCo v3 does", bool)
    )


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = field(default=100, metadata=_m("passes over the slices", int))
    batch_size: int = field(default=256, metadata=_m("global batch (all ranks, all accumulation steps)", int))
    accum_steps: int = field(default=1, metadata=_m("gradient accumulation steps per optimizer step", int))
    base_lr: float = field(
        default=1.5e-4, metadata=_m("lr = base_lr x batch_size / 256 (MoCo v3 ViT: 1.5e-4)", NUMBER)
    )
    weight_decay: float = field(default=0.1, metadata=_m("AdamW weight decay (MoCo v3 ViT: 0.1)", NUMBER))
    warmup_epochs: float = field(
        default=10.0, metadata=_m("linear warm-up length, then half-cosine to 0", NUMBER)
    )
    momentum: float = field(default=0.99, metadata=_m("momentum-encoder EMA at step 0", NUMBER))
    momentum_cosine: bool = field(
        default=True, metadata=_m("raise the momentum to 1 along a half-cosine (MoCo v3)", bool)
    )
    precision: str = field(
        default="auto",
        metadata=_m("autocast: bf16, fp32, or auto (bf16 where supported)", str, ("auto", "bf16", "fp32")),
    )
    clip_grad: float | None = field(
        default=None, metadata=_m("clip the gradient norm at this value", (float, int, type(None)))
    )


@dataclass(frozen=True)
class RuntimeConfig:
    output_dir: str | None = field(
        default=None,
        metadata=_m("where checkpoints and logs go (default: runs/pretrain/<experiment>)", (str, type(None))),
    )
    checkpoint_every_steps: int = field(
        default=0, metadata=_m("write the training state every N steps (0: at each epoch end)", int)
    )
    keep_checkpoints: int = field(
        default=2, metadata=_m("training-state checkpoints kept (the newest); 0 keeps all", int)
    )
    max_steps: int | None = field(
        default=None,
        metadata=_m("stop (with a checkpoint) after this many steps; resume later", (int, type(None))),
    )
    num_workers: int = field(
        default=0, metadata=_m("DataLoader workers (0: augment in the training process)", int)
    )
    threads: int | None = field(
        default=None,
        metadata=_m("torch CPU threads per process (default: torch's choice)", (int, type(None))),
    )
    device: str = field(default="auto", metadata=_m("auto, cpu or cuda", str, ("auto", "cpu", "cuda")))
    progress: bool = field(default=True, metadata=_m("show a progress bar", bool))


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

    experiment: str = "lecl"
    seed: int = 0
    sampling: str = "lesion"
    lesion_oversample: float = 1.0
    plugins: tuple[str, ...] = ()
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
        values = self.to_dict()
        values.pop("path", None)
        values.pop("runtime")  # where and how it runs (device, threads, output...) may change on resume
        return stable_hash(values)


_TOP = {
    "experiment": ("lecl", "name used in checkpoint file names", (str,), None),
    "seed": (0, "seed of initialisation, batch order and augmentation", (int,), None),
    "sampling": (
        "lesion",
        "lesion: LeCL lesion-centred views; none: plain MoCo v3 views",
        (str,),
        ("lesion", "none"),
    ),
    "lesion_oversample": (1.0, "how often each lesion slice is seen per epoch (>= 1)", NUMBER, None),
    "plugins": ([], "local plugin files or folders (e.g. one providing the scan source)", (list,), None),
}

OVERRIDES = {
    "experiment": "experiment",
    "seed": "seed",
    "sampling": "sampling",
    "arch": "model.arch",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.base_lr",
    "sample_weight": "loss.sample_weight",
    "loss": "loss.name",
    "output_dir": "runtime.output_dir",
    "max_steps": "runtime.max_steps",
    "threads": "runtime.threads",
    "num_workers": "runtime.num_workers",
    "checkpoint_every": "runtime.checkpoint_every_steps",
    "device": "runtime.device",
}
"""Command-line flag (argparse dest) -> key path it overrides."""


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> PretrainConfig:
    """Read ``path`` (``None``: defaults only), apply ``overrides`` (key path -> value) and validate.

    Raises :class:`ConfigError` with one line per problem.
    """
    data: Any = {}
    lines: dict[str, int] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        data, lines = read_yaml(path)
        base = path.parent
        data = {} if data is None else data
    where = str(path) if path is not None else "<defaults>"
    problems = _Problems(where, lines)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    data = _deep_copy(data)
    for key_path, value in (overrides or {}).items():
        if value is None:
            continue
        _set(data, key_path, value)
        lines[key_path] = 0  # marks it as given on the command line
    problems.cli = {k for k, v in (overrides or {}).items() if v is not None}

    top: dict[str, Any] = {}
    known = {**_TOP, **{name: None for name in SECTIONS}}
    for key in data:
        if key not in known:
            problems.add(
                str(key), f"unknown key{_suggest(str(key), known)}; expected one of: {', '.join(known)}"
            )
    for key, (default, _, types, choices) in _TOP.items():
        value = data.get(key, default)
        if _check(value, types, choices, key, problems):
            top[key] = value
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        given = data.get(name) or {}
        if not isinstance(given, dict):
            problems.add(name, f"expected a mapping, got {type(given).__name__}")
            given = {}
        sections[name] = _section(cls, given, name, problems)
    if problems.items:
        raise ConfigError(problems.items[0], lines=problems.items)

    runtime = sections["runtime"]
    output = runtime["output_dir"]
    if output is not None:
        runtime["output_dir"] = str(_resolve(output, base, "runtime.output_dir" in problems.cli))
    plugins = []
    for index, entry in enumerate(top["plugins"]):
        if not isinstance(entry, str):
            problems.add(f"plugins[{index}]", f"expected a path, got {type(entry).__name__}")
            continue
        resolved = (base / entry).expanduser().resolve()
        if not resolved.exists():
            problems.add(f"plugins[{index}]", f"plugin file or folder not found: {resolved}")
        plugins.append(str(resolved))
    config = PretrainConfig(
        experiment=top["experiment"],
        seed=top["seed"],
        sampling=top["sampling"],
        lesion_oversample=float(top["lesion_oversample"]),
        plugins=tuple(plugins),
        data=DataConfig(**sections["data"]),
        model=ModelConfig(**sections["model"]),
        augment=AugmentConfig(**sections["augment"]),
        loss=LossSettings(**sections["loss"]),
        optim=OptimConfig(**sections["optim"]),
        runtime=RuntimeConfig(**runtime),
        path=str(Path(path).resolve()) if path is not None else None,
    )
    _check_semantics(config, problems)
    if problems.items:
        raise ConfigError(problems.items[0], lines=problems.items)
    return config


def output_dir(config: PretrainConfig) -> Path:
    """The run folder: ``runtime.output_dir`` or ``runs/pretrain/<experiment>`` under the working folder."""
    if config.runtime.output_dir:
        return Path(config.runtime.output_dir)
    return Path.cwd() / "runs" / "pretrain" / _safe(config.experiment)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "run"


# --- checking ---------------------------------------------------------------------------------------


class _Problems:
    def __init__(self, where: str, lines: Mapping[str, int]) -> None:
        self.where, self.lines = where, lines
        self.items: list[str] = []
        self.cli: set[str] = set()

    def add(self, key_path: str, message: str) -> None:
        if key_path in self.cli:
            flag = "--" + next(k for k, v in OVERRIDES.items() if v == key_path).replace("_", "-")
            self.items.append(f"command line {flag} ({key_path}): {message}")
            return
        line = self.lines.get(key_path)
        prefix = f"{self.where}:{line}" if line else self.where
        self.items.append(f"{prefix}: {key_path}: {message}")


def _section(cls: type, given: Mapping[str, Any], name: str, problems: _Problems) -> dict[str, Any]:
    declared = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key in given:
        if key not in declared:
            problems.add(
                f"{name}.{key}",
                f"unknown key{_suggest(str(key), declared)}; expected one of: {', '.join(declared)}",
            )
    for key, spec in declared.items():
        if key in given:
            value = given[key]
            if _check(value, spec.metadata["types"], spec.metadata["choices"], f"{name}.{key}", problems):
                values[key] = float(value) if spec.metadata["types"] == NUMBER else value
        else:
            values[key] = spec.default_factory() if spec.default is MISSING else spec.default
    return values


def _check(
    value: Any, types: tuple[type, ...], choices: tuple[Any, ...] | None, key: str, problems: _Problems
) -> bool:
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        problems.add(key, f"expected {names}, got {value!r}")
        return False
    if choices is not None and value not in choices:
        problems.add(key, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        return False
    return True


def _check_semantics(c: PretrainConfig, problems: _Problems) -> None:
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
        problems.add("optim.warmup_epochs", f"longer than optim.epochs ({c.optim.epochs})")
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
    if c.runtime.max_steps is not None and c.runtime.max_steps < 1:
        problems.add("runtime.max_steps", f"must be >= 1, got {c.runtime.max_steps}")
    if c.runtime.threads is not None and c.runtime.threads < 1:
        problems.add("runtime.threads", f"must be >= 1, got {c.runtime.threads}")


def _suggest(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _set(data: dict[str, Any], key_path: str, value: Any) -> None:
    node = data
    *parents, last = key_path.split(".")
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _resolve(value: str, base: Path, from_cli: bool) -> Path:
    """YAML paths are relative to the YAML's folder; command-line paths to the working folder."""
    root = Path.cwd() if from_cli else base
    return (root / value).expanduser().resolve()
