"""The benchmark YAML: schema, loading and validation.

Every problem is reported on its own line naming the YAML file, the line, the key path and what was
expected, e.g. ``benchmarks/all.yaml:7: encoders[1].name: unknown encoder 'vitt' (known: ...)``. Paths in
the YAML are relative to the YAML file's folder, so a config means the same from any working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from clear_bench.errors import ConfigError, UserError
from clear_bench.evaluation.settings import TrainConfig
from clear_bench.registry import Registry, load_registry
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


@dataclass(frozen=True)
class ComponentRef:
    """One encoder, task or aggregator entry: plugin name, row id and its options."""

    name: str
    id: str
    options: dict[str, Any] = field(default_factory=dict)
    pretrain: PretrainRef | None = None
    baseline: bool = False
    twin_of: str | None = None


@dataclass(frozen=True)
class TransferRef:
    """Train every (encoder, head) on all patients of task ``train``, test on all patients of task ``test``
    (``heads``: the aggregator ids to transfer; ``None``: every head)."""

    train: str
    test: str
    heads: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return f"{self.train}-to-{self.test}"


@dataclass(frozen=True)
class PretrainRef:
    """An encoder that ``run`` first trains: pretrainer name, its recipe file and its declared options."""

    name: str
    config: Path
    options: dict[str, Any] = field(default_factory=dict)


# The defaults of these sections live in the schema below (``_SECTIONS``), once.


@dataclass(frozen=True)
class PreprocessingConfig:
    windows: tuple[str, ...]
    window_mode: str
    slice_step: int
    slice_spacing_mm: float | None
    image_size: int | None


@dataclass(frozen=True)
class ExtractionConfig:
    batch_size: int
    num_workers: int
    precision: str


@dataclass(frozen=True)
class CrossValConfig:
    folds: int
    seed: int
    val_fraction: float
    epochs: int
    patience: int
    lr: float
    weight_decay: float
    batch_size: int
    max_instances: int
    bootstrap: int
    comparison_resamples: int
    permutations: int
    permutation_heads: list[str] | None
    train_fractions: list[float]
    fraction_draws: int
    fraction_heads: list[str] | None
    site_held_out: bool
    site_heads: list[str] | None
    tuning: dict[str, Any] | None
    repeats: int
    require_patients: bool
    threads: int
    workers: int

    def train_config(self, device: str = "cpu") -> TrainConfig:
        """The heads' training settings: every :class:`TrainConfig` field this section sets."""
        shared = {f.name: getattr(self, f.name) for f in fields(TrainConfig) if hasattr(self, f.name)}
        return TrainConfig(**shared, device=device)


@dataclass(frozen=True)
class BenchmarkConfig:
    """A validated benchmark: what to compare (encoders x tasks x aggregators) and how."""

    path: Path
    name: str
    device: str
    seed: int
    output_dir: Path
    cache_dir: Path
    checkpoint_dir: Path
    leaderboard_dir: Path
    plugins: tuple[Path, ...]
    preprocessing: PreprocessingConfig
    extraction: ExtractionConfig
    crossval: CrossValConfig
    encoders: tuple[ComponentRef, ...]
    tasks: tuple[ComponentRef, ...]
    aggregators: tuple[ComponentRef, ...]
    transfer: tuple[TransferRef, ...] = ()


# --- schema --------------------------------------------------------------------------------------------

_TRAIN = TrainConfig()  # the heads' training defaults, written once

_SECTIONS: dict[str, dict[str, Option]] = {
    "preprocessing": {
        "windows": Option(list, ["soft-tissue", "lung", "bone"],
                          "HU windows: preset names or 'W<width>L<level>' (e.g. W350L50)"),
        "window_mode": Option(str, "per-window", "one image per window, or windows stacked as channels",
                              choices=("per-window", "stacked")),
        "slice_step": Option(int, 1, "use every k-th axial slice"),
        "slice_spacing_mm": Option((float, int, type(None)), None, "select slices this far apart (mm)"),
        "image_size": Option((int, type(None)), None, "input size; default: the encoder's own"),
    },
    "extraction": {
        "batch_size": Option(int, 64, "slices per forward pass"),
        "num_workers": Option(int, 2, "DataLoader workers that read and window scans"),
        "precision": Option(str, "auto", "autocast precision", choices=("auto", "fp32", "bf16")),
    },
    "crossval": {
        "folds": Option(int, 5, "K of the patient-level K-fold"),
        "seed": Option(int, _TRAIN.seed, "seed of the splits and of every head's initialisation"),
        "val_fraction": Option((float, int), _TRAIN.val_fraction, "inner validation share of training folds"),
        "epochs": Option(int, _TRAIN.epochs, "maximum epochs per fold"),
        "patience": Option(int, _TRAIN.patience, "early-stopping patience on validation loss"),
        "lr": Option((float, int), _TRAIN.lr, "AdamW learning rate"),
        "weight_decay": Option((float, int), _TRAIN.weight_decay, "AdamW weight decay"),
        "batch_size": Option(int, _TRAIN.batch_size, "bags per optimisation step"),
        "max_instances": Option(int, _TRAIN.max_instances, "instances sampled per training bag"),
        "bootstrap": Option(int, 2000, "patient-level bootstrap resamples for the confidence intervals"),
        "comparison_resamples": Option(int, 30000, "paired resamples of the declared comparisons (the "
                                                   "smallest p they can show is 2 / (N + 1))"),
        "permutations": Option(int, 20, "patient-level label permutations through the same folds: the "
                                        "permutation null of every row (0: none)"),
        "permutation_heads": Option((list, type(None)), None, "the heads (aggregator ids) whose rows get the "
                                                              "permutation null (default: every head)"),
        "train_fractions": Option(list, [], "label-efficiency curves: fractions in (0, 1] of each fold's "
                                            "labelled training patients to train on (e.g. [0.1, 0.25, 0.5]; "
                                            "[]: no curves); the full data ends every curve"),
        "fraction_draws": Option(int, 3, "nested random draws of the training patients per fraction"),
        "fraction_heads": Option((list, type(None)), None, "the heads (aggregator ids) whose rows get "
                                                           "label-efficiency curves (default: every head)"),
        "site_held_out": Option(bool, False, "also evaluate leave-one-site-out (tasks whose source knows "
                                             "each scan's acquisition site) and probe the site from the "
                                             "embeddings"),
        "site_heads": Option((list, type(None)), None, "the heads whose rows are evaluated "
                                                       "leave-one-site-out (default: every head)"),
        "tuning": Option((dict, type(None)), None,
                         "equal tuning budgets: {grid: {lr: [...], weight_decay: [...], hidden_dim: [...]}, "
                         "inner_folds: 3, heads: [...]} searched by inner CV on each fold's training "
                         "patients for every encoder (null: the fixed settings)"),
        "repeats": Option(int, 1, "repeats of the K-fold split with distinct seeds (R x K folds)"),
        "require_patients": Option(bool, False, "refuse a task whose scans do not all name a patient, "
                                                "instead of evaluating it scan-level"),
        "threads": Option(int, 1, "torch CPU threads while heads train (small heads run fastest on 1)"),
        "workers": Option(int, 0, "processes training heads in parallel, one thread each (0: one per CPU "
                                  "core); results are identical to a serial run"),
    },
}

_TUNING_KEYS: dict[str, Option] = {
    "grid": Option(dict, None, "candidate values per key: lr, weight_decay, or any option of the tuned heads",
                   required=True),
    "inner_folds": Option(int, 3, "inner folds drawn from each outer fold's training patients"),
    "heads": Option((list, type(None)), None, "the heads (aggregator ids) to tune (default: every trained "
                                              "head; the probes tune themselves)"),
}

_TOP: dict[str, Option] = {
    "name": Option(str, None, "benchmark name (default: the YAML file's stem)"),
    "device": Option(str, "auto", "auto, cpu, cuda or cuda:N"),
    "seed": Option(int, 0, "global seed"),
    "output_dir": Option(str, None, "run folder (default: runs/<name> beside the YAML's parent)"),
    "cache_dir": Option(str, None, "embedding cache (default: the user cache folder)"),
    "checkpoint_dir": Option(str, None, "encoders pretrained by the run (default: the user cache folder)"),
    "leaderboard_dir": Option(str, None, "markdown leaderboards (default: <output_dir>/leaderboards)"),
    "plugins": Option(list, [], "local plugin files or folders"),
    "preprocessing": Option(dict, {}, "slice windowing and selection"),
    "extraction": Option(dict, {}, "embedding extraction settings"),
    "crossval": Option(dict, {}, "cross-validation protocol"),
    "encoders": Option(list, None, "encoders to compare", required=True),
    "tasks": Option(list, None, "tasks to evaluate on", required=True),
    "aggregators": Option(list, [{"name": "abmil"}], "MIL heads"),
    "transfer": Option(list, [], "train on one task, test on another with the same labels: "
                                 "[{train: TASK_ID, test: TASK_ID, heads: [...]}]"),
}
_TRANSFER_KEYS: dict[str, Option] = {
    "train": Option(str, None, "id of the task whose patients the heads train on", required=True),
    "test": Option(str, None, "id of the task whose patients they are tested on", required=True),
    "heads": Option((list, type(None)), None, "the heads (aggregator ids) to transfer (default: every head)"),
}

_COMPONENT_KEYS: dict[str, Option] = {
    "name": Option(str, None, "registered plugin name", required=True),
    "id": Option(str, None, "row label (default: the name; must be unique)"),
    "options": Option(dict, {}, "the component's own options"),
}
_ENCODER_KEYS: dict[str, Option] = {
    **_COMPONENT_KEYS,
    "baseline": Option(bool, False, "compare every other row of a board with this encoder's rows"),
    "twin_of": Option(str, None, "for a random-init entry: the id of the trained entry it is the twin of "
                                 "(default: every trained entry of the same encoder plugin)"),
    "pretrain": Option(dict, None,
                       "train this encoder first: {name: PRETRAINER, config: FILE, options: {...}}"),
}
_PRETRAIN_KEYS: dict[str, Option] = {
    "name": Option(str, None, "registered pretrainer", required=True),
    "config": Option(Path, None, "the pretrainer's recipe file", required=True),
    "options": Option(dict, {}, "the pretrainer's own options (as its command-line flags)"),
}

SECTIONS = _SECTIONS
"""The benchmark YAML's sections and their declared options (the subcommands' flags come from these)."""


# --- loading -------------------------------------------------------------------------------------------


def load_benchmark(path: str | Path, registry: Registry | None = None) -> BenchmarkConfig:
    """Read and validate a benchmark YAML. Raises :class:`ConfigError` listing every problem.

    Without a ``registry`` the structure is checked but plugin names and their options are not.
    """
    path = Path(path)
    data, lines = read_yaml(path)
    problems = Problems(path, lines)
    if not isinstance(data, dict):
        problems.add("", f"expected a mapping of settings, got {describe(data)}")
        raise ConfigError(problems.items[0], lines=problems.items)

    top = check_mapping(data, _TOP, "", problems, base=path.parent)
    sections = {name: check_mapping(top.get(name) or {}, schema, name, problems, base=path.parent)
                for name, schema in _SECTIONS.items() if isinstance(top.get(name, {}), dict)}
    base = path.parent
    plugin_paths: list[Path] = []
    for index, entry in enumerate(top.get("plugins") or []):
        key = f"plugins[{index}]"
        if not isinstance(entry, str):
            problems.add(key, f"expected a path (str), got {describe(entry)}")
            continue
        candidate = (base / entry).resolve()
        if not candidate.exists():
            problems.add(key, f"plugin file or folder not found: {candidate}")
        plugin_paths.append(candidate)

    components = {kind: _check_components(top.get(kind), kind, base, problems)
                  for kind in ("encoders", "tasks", "aggregators") if kind in top}
    encoder_ids = {ref.id for _, ref in components.get("encoders", [])}
    for index, ref in components.get("encoders", []):
        if ref.twin_of is not None and ref.twin_of not in encoder_ids:
            problems.add(f"encoders[{index}].twin_of", f"no encoder entry has the id '{ref.twin_of}'"
                                                       f"{suggest(ref.twin_of, encoder_ids)}")
    if registry is not None:
        for kind, refs in components.items():
            for index, ref in refs:
                _check_against_registry(ref, kind, index, registry, base, problems)

    transfer = _check_transfer(top.get("transfer"), {ref.id for _, ref in components.get("tasks", [])},
                               base, problems)
    windows = sections.get("preprocessing", {}).get("windows", [])
    if isinstance(windows, list):
        _check_windows(windows, problems)
    _check_fractions(sections.get("crossval", {}), problems)
    if sections.get("crossval", {}).get("tuning") is not None:
        sections["crossval"]["tuning"] = _check_tuning(sections["crossval"]["tuning"], base, problems)
        if registry is not None and sections["crossval"]["tuning"] is not None:
            heads = components.get("aggregators", _default_aggregators())
            _check_tuned_heads(sections["crossval"]["tuning"], [ref for _, ref in heads], registry, problems)

    if problems.items:
        raise ConfigError(problems.items[0], lines=problems.items)

    name = top.get("name") or path.stem
    output_dir = _resolve(base, top.get("output_dir")) or (base.parent / "runs" / name).resolve()
    prep = sections["preprocessing"]
    return BenchmarkConfig(
        path=path.resolve(),
        name=name,
        device=top["device"],
        seed=top["seed"],
        output_dir=output_dir,
        cache_dir=_resolve(base, top.get("cache_dir")) or default_cache_dir() / "embeddings",
        checkpoint_dir=_resolve(base, top.get("checkpoint_dir")) or default_cache_dir() / "checkpoints",
        leaderboard_dir=_resolve(base, top.get("leaderboard_dir")) or output_dir / "leaderboards",
        plugins=tuple(plugin_paths),
        preprocessing=PreprocessingConfig(
            windows=tuple(prep["windows"]), window_mode=prep["window_mode"], slice_step=prep["slice_step"],
            slice_spacing_mm=prep["slice_spacing_mm"], image_size=prep["image_size"]),
        extraction=ExtractionConfig(**sections["extraction"]),
        crossval=CrossValConfig(**sections["crossval"]),
        encoders=tuple(ref for _, ref in components["encoders"]),
        tasks=tuple(ref for _, ref in components["tasks"]),
        aggregators=tuple(ref for _, ref in components.get("aggregators", _default_aggregators())),
        transfer=transfer,
    )


def load_benchmark_with_plugins(
    path: str | Path, extra_plugins: Sequence[str | Path] = ()
) -> tuple[BenchmarkConfig, Registry]:
    """Discover plugins (installed, the YAML's ``plugins:``, ``extra_plugins``), then validate the YAML
    against them in one pass, so every problem is reported together."""
    registry = load_registry([*plugin_paths_of(path), *extra_plugins])
    return load_benchmark(path, registry), registry


def plugin_paths_of(path: str | Path) -> list[Path]:
    """The ``plugins:`` paths of a benchmark YAML, read before validation (which needs the plugins)."""
    path = Path(path)
    try:
        data, _ = read_yaml(path)
    except ConfigError:
        return []  # load_benchmark reports it
    entries = data.get("plugins") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return []
    return [(path.parent / entry).resolve() for entry in entries if isinstance(entry, str)]


def default_cache_dir() -> Path:
    """The user cache folder: ``$CLEAR_BENCH_CACHE``, else ``$XDG_CACHE_HOME/clear-bench``."""
    if os.environ.get("CLEAR_BENCH_CACHE"):
        return Path(os.environ["CLEAR_BENCH_CACHE"]).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "clear-bench"


def _default_aggregators() -> list[tuple[int, ComponentRef]]:
    return [(0, ComponentRef("abmil", "abmil", {}))]


def _resolve(base: Path, value: str | None) -> Path | None:
    return (base / value).expanduser().resolve() if value else None


def _check_pretrain(entry: Any, key: str, base: Path, problems: Problems) -> PretrainRef | None:
    if entry is None:
        return None
    fields = check_mapping(entry, _PRETRAIN_KEYS, key, problems, base=base)
    if "name" not in fields or "config" not in fields:
        return None
    config = Path(fields["config"])
    if not config.is_file():
        problems.add(f"{key}.config", f"not a file: {config}")
    return PretrainRef(fields["name"], config, dict(fields.get("options") or {}))


def _check_components(entries: Any, kind: str, base: Path,
                      problems: Problems) -> list[tuple[int, ComponentRef]]:
    refs: list[tuple[int, ComponentRef]] = []
    if not isinstance(entries, list):
        return refs  # the type problem was reported by the top-level check
    if not entries:
        problems.add(kind, f"expected at least one {kind[:-1]}")
    seen_ids: dict[str, int] = {}
    for index, entry in enumerate(entries):
        key = f"{kind}[{index}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            problems.add(key, f"expected a mapping with 'name' (or a plain name), got {describe(entry)}")
            continue
        before = len(problems.items)
        schema = _ENCODER_KEYS if kind == "encoders" else _COMPONENT_KEYS
        fields = check_mapping(entry, schema, key, problems, base=base)
        pretrain = _check_pretrain(fields.get("pretrain"), f"{key}.pretrain", base, problems)
        if len(problems.items) > before or "name" not in fields:
            continue
        options = dict(fields.get("options") or {})
        ref = ComponentRef(fields["name"], fields.get("id") or fields["name"], options, pretrain,
                           bool(fields.get("baseline")), fields.get("twin_of"))
        if ref.id in seen_ids:
            problems.add(f"{key}.id", f"duplicate row id '{ref.id}' (also {kind}[{seen_ids[ref.id]}]); "
                                      "give each entry a distinct 'id'")
            continue
        seen_ids[ref.id] = index
        refs.append((index, ref))
    return refs


def _check_against_registry(ref: ComponentRef, kind: str, index: int, registry: Registry, base: Path,
                            problems: Problems) -> None:
    key = f"{kind}[{index}]"
    if ref.pretrain is not None and ref.pretrain.name not in registry.pretrainers:
        known = ", ".join(sorted(registry.pretrainers)) or "none installed"
        problems.add(f"{key}.pretrain.name", f"unknown pretrainer '{ref.pretrain.name}' (known: {known})")
    elif ref.pretrain is not None:
        declared = registry.pretrainer(ref.pretrain.name).options
        checked = check_mapping(ref.pretrain.options, declared, f"{key}.pretrain.options", problems,
                                base=base, defaults=False)
        ref.pretrain.options.clear()
        ref.pretrain.options.update(checked)
    _check_component(ref.name, ref.options, kind, f"{key}.name", f"{key}.options", registry, base, problems)


def _check_component(name: str, options: dict[str, Any], kind: str, name_path: str, options_path: str,
                     registry: Registry, base: Path, problems: Problems) -> None:
    """Check a component name and its options (in place: paths become absolute), recursing into options
    that name another component."""
    table = registry.of_kind(kind)
    if name not in table:
        known = ", ".join(sorted(table)) or "none installed"
        failed = [f.plugin for f in registry.failures]
        hint = f"; plugins that failed to load: {', '.join(failed)}" if failed else ""
        problems.add(name_path, f"unknown {kind[:-1]} '{name}'{suggest(name, table)} (known: {known}){hint}")
        return
    declared: Options = table[name].spec.options
    for option_key, value in list(options.items()):
        option_path = f"{options_path}.{option_key}"
        if option_key not in declared:
            expected = ", ".join(declared) or "no options"
            problems.add(option_path, f"unknown option for {kind[:-1]} '{name}'"
                                      f"{suggest(option_key, declared)}; expected: {expected}")
            continue
        option = declared[option_key]
        checked = check_value(value, option, option_path, problems, base)
        if checked is INVALID:
            continue
        if option.type is Path:
            options[option_key] = checked
        elif option.component and isinstance(value, str):
            _check_component(value, {}, option.component, option_path, option_path, registry, base, problems)
        elif option.component and isinstance(value, dict):
            nested = {k: v for k, v in value.items() if k != "name"}
            if "name" not in value:
                problems.add(option_path, f"expected 'name' of a {option.component[:-1]} among its keys")
                continue
            _check_component(str(value["name"]), nested, option.component, f"{option_path}.name",
                             option_path, registry, base, problems)
            options[option_key] = {"name": value["name"], **nested}
    for option_key, option in declared.items():
        if option.required and option_key not in options:
            problems.add(f"{options_path}.{option_key}", f"required option is missing ({option.help})")


def _check_fractions(crossval: Mapping[str, Any], problems: Problems) -> None:
    """Training fractions are numbers in (0, 1], each once; at least one draw of each."""
    fractions = crossval.get("train_fractions") or []
    for index, value in enumerate(fractions if isinstance(fractions, list) else []):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            problems.add(f"crossval.train_fractions[{index}]",
                         f"expected a fraction in (0, 1], got {value!r}")
    if isinstance(fractions, list) and len(set(map(str, fractions))) < len(fractions):
        problems.add("crossval.train_fractions", "a fraction is listed twice")
    draws = crossval.get("fraction_draws", 1)
    if isinstance(draws, int) and draws < 1:
        problems.add("crossval.fraction_draws", f"expected at least 1 draw, got {draws}")


def _check_transfer(entries: Any, task_ids: set[str], base: Path,
                    problems: Problems) -> tuple[TransferRef, ...]:
    """``transfer``: pairs of distinct task ids of this benchmark, each pair once."""
    refs: list[TransferRef] = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        key = f"transfer[{index}]"
        if not isinstance(entry, dict):
            problems.add(key, f"expected a mapping {{train: TASK_ID, test: TASK_ID}}, got {describe(entry)}")
            continue
        before = len(problems.items)
        fields = check_mapping(entry, _TRANSFER_KEYS, key, problems, base=base)
        for side in ("train", "test"):
            if isinstance(fields.get(side), str) and fields[side] not in task_ids:
                problems.add(f"{key}.{side}", f"no task entry has the id '{fields[side]}'"
                                              f"{suggest(fields[side], task_ids)}")
        if len(problems.items) > before:
            continue
        if fields["train"] == fields["test"]:
            problems.add(key, f"train and test are both '{fields['train']}'; name two different tasks")
            continue
        heads = fields.get("heads")
        ref = TransferRef(fields["train"], fields["test"],
                          tuple(map(str, heads)) if heads is not None else None)
        if any((r.train, r.test) == (ref.train, ref.test) for r in refs):
            problems.add(key, f"the pair {ref.train} -> {ref.test} is listed twice")
            continue
        refs.append(ref)
    return tuple(refs)


def _check_tuning(section: Mapping[str, Any], base: Path, problems: Problems) -> dict[str, Any] | None:
    """``crossval.tuning``: a grid of non-empty, duplicate-free lists (positive learning rates,
    non-negative weight decays), at least 2 inner folds, head ids as strings."""
    checked = check_mapping(section, _TUNING_KEYS, "crossval.tuning", problems, base=base)
    grid = checked.get("grid")
    if not isinstance(grid, dict):
        return None
    if not grid:
        problems.add("crossval.tuning.grid", "expected at least one key with candidate values")
    for key, values in grid.items():
        path = f"crossval.tuning.grid.{key}"
        if not isinstance(values, list) or not values:
            problems.add(path, f"expected a non-empty list of candidate values, got {describe(values)}")
            continue
        if len({repr(v) for v in values}) < len(values):
            problems.add(path, "a candidate value is listed twice")
        for index, value in enumerate(values):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if key == "lr" and not (number and value > 0):
                problems.add(f"{path}[{index}]", f"expected a learning rate > 0, got {value!r}")
            elif key == "weight_decay" and not (number and value >= 0):
                problems.add(f"{path}[{index}]", f"expected a weight decay >= 0, got {value!r}")
            elif isinstance(value, dict | list):
                problems.add(f"{path}[{index}]",
                             f"expected a number, string or boolean, got {describe(value)}")
    folds = checked.get("inner_folds", 3)
    if isinstance(folds, int) and folds < 2:
        problems.add("crossval.tuning.inner_folds", f"expected at least 2 inner folds, got {folds}")
    for index, head in enumerate(checked.get("heads") or []):
        if not isinstance(head, str):
            problems.add(f"crossval.tuning.heads[{index}]", f"expected a head id (str), got {describe(head)}")
    return checked


def _check_tuned_heads(tuning: Mapping[str, Any], heads: Sequence[ComponentRef], registry: Registry,
                       problems: Problems) -> None:
    """The tuned heads are trained heads of this benchmark, and each declares every head key of the grid."""
    from clear_bench.evaluation.tuning import TRAIN_KEYS

    table = registry.of_kind("aggregators")
    known = {ref.id: table[ref.name].spec for ref in heads if ref.name in table}
    named = tuning.get("heads")
    for index, head in enumerate(named or []):
        if isinstance(head, str) and head not in known:
            problems.add(f"crossval.tuning.heads[{index}]", f"no aggregator entry has the id '{head}'"
                                                            f"{suggest(head, known)}")
        elif isinstance(head, str) and known[head].fit is not None:
            problems.add(f"crossval.tuning.heads[{index}]",
                         f"'{head}' is a closed-form probe (it chooses its regularisation by its own "
                         "inner CV)")
    tuned = [(i, spec) for i, spec in known.items() if (named is None and spec.fit is None)
             or (named is not None and i in named and spec.fit is None)]
    for key in tuning.get("grid") or {}:
        lacking = [i for i, spec in tuned if key not in TRAIN_KEYS and key not in spec.options]
        if lacking:
            problems.add(f"crossval.tuning.grid.{key}", f"not a training setting (lr, weight_decay) nor an "
                                                        f"option of head {', '.join(lacking)}")


def _check_windows(windows: Sequence[Any], problems: Problems) -> None:
    from clear_bench.data.windowing import PRESETS, parse_window

    for index, window in enumerate(windows):
        try:
            parse_window(window)
        except (ValueError, TypeError, UserError):
            problems.add(f"preprocessing.windows[{index}]",
                         f"unknown window {window!r}; expected one of {', '.join(PRESETS)}, "
                         "'W<width>L<level>' such as W350L50, or {width: ..., level: ...}")
