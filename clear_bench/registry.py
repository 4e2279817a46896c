"""Plugin discovery: installed distributions, local plugin files, and the registry of named components.

Like pytest, the core registers its own components through the same hooks as third-party plugins. A plugin
that fails to import is recorded with its name and exception and the others still load; two plugins that
provide one name are an error naming both.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

import pluggy

from clear_bench import PROJECT, hookspecs
from clear_bench.errors import PluginError
from clear_bench.specs import (
    AggregatorSpec,
    CommandSpec,
    EncoderSpec,
    MetricSpec,
    PretrainerSpec,
    SourceSpec,
    TaskSpec,
)

ENTRY_POINT_GROUP = "clear_bench"
KINDS = ("encoders", "tasks", "sources", "aggregators", "metrics", "pretrainers", "commands")
_SPEC_TYPES = {
    "encoders": EncoderSpec,
    "tasks": TaskSpec,
    "sources": SourceSpec,
    "aggregators": AggregatorSpec,
    "metrics": MetricSpec,
    "pretrainers": PretrainerSpec,
    "commands": CommandSpec,
}

S = TypeVar("S")


@dataclass(frozen=True)
class Provider:
    """Where a component comes from: the plugin, its distribution and version (or a local path)."""

    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class Registered(Generic[S]):
    spec: S
    provider: Provider


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose hook raised; the rest of the registry is still usable."""

    plugin: str
    origin: str
    error: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' ({self.origin}) failed to load: {self.error}"


@dataclass
class Registry:
    """Every registered component by kind and name, with its provider."""

    encoders: dict[str, Registered[EncoderSpec]] = field(default_factory=dict)
    tasks: dict[str, Registered[TaskSpec]] = field(default_factory=dict)
    sources: dict[str, Registered[SourceSpec]] = field(default_factory=dict)
    aggregators: dict[str, Registered[AggregatorSpec]] = field(default_factory=dict)
    metrics: dict[str, Registered[MetricSpec]] = field(default_factory=dict)
    pretrainers: dict[str, Registered[PretrainerSpec]] = field(default_factory=dict)
    commands: dict[str, Registered[CommandSpec]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    def of_kind(self, kind: str) -> dict[str, Registered[Any]]:
        if kind not in KINDS:
            raise KeyError(f"unknown component kind '{kind}' (known: {', '.join(KINDS)})")
        return getattr(self, kind)

    def get(self, kind: str, name: str) -> Any:
        """The spec of ``kind`` named ``name``; a :class:`PluginError` listing the known names otherwise."""
        table = self.of_kind(kind)
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise PluginError(f"unknown {kind[:-1]} '{name}' (known: {known}){self._failure_hint()}")
        return table[name].spec

    def encoder(self, name: str) -> EncoderSpec:
        return self.get("encoders", name)

    def task(self, name: str) -> TaskSpec:
        return self.get("tasks", name)

    def source(self, name: str) -> SourceSpec:
        return self.get("sources", name)

    def aggregator(self, name: str) -> AggregatorSpec:
        return self.get("aggregators", name)

    def pretrainer(self, name: str) -> PretrainerSpec:
        return self.get("pretrainers", name)

    def metric(self, name: str) -> MetricSpec:
        return self.get("metrics", name)

    def metrics_for(self, label_type: str) -> list[MetricSpec]:
        """Every registered metric that applies to ``label_type``, built-ins first."""
        return [entry.spec for entry in self.metrics.values() if label_type in entry.spec.label_types]

    def references(self) -> list[EncoderSpec]:
        """The encoders declared non-learned references (every board carries them)."""
        return [entry.spec for entry in self.encoders.values() if entry.spec.reference]

    def _failure_hint(self) -> str:
        if not self.failures:
            return ""
        return "; note: " + "; ".join(str(f) for f in self.failures)


def load_registry(
    local_plugins: Sequence[str | Path] = (), *, installed: bool = True
) -> Registry:
    """Discover plugins and collect their components.

    ``local_plugins`` are ``.py`` files or folders (a package with ``__init__.py``, or a folder whose
    ``.py`` files are each a plugin). ``installed`` loads the ``clear_bench`` entry-point group.
    """
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    providers: dict[str, Provider] = {}
    failures: list[PluginFailure] = []

    def register(module: ModuleType, provider: Provider) -> None:
        unknown = _unknown_hooks(module)
        if unknown:
            message = f"unknown hook(s): {', '.join(unknown)}"
            failures.append(PluginFailure(provider.plugin, provider.distribution, message))
            return
        if manager.is_registered(module):
            return
        try:
            manager.register(module, name=provider.plugin)
        except (ValueError, pluggy.PluginValidationError) as exc:
            failures.append(PluginFailure(provider.plugin, provider.distribution, str(exc)))
            return
        providers[provider.plugin] = provider

    if installed:
        for entry_point in _entry_points():
            dist = entry_point.dist
            provider = Provider(
                plugin=entry_point.name,
                distribution=dist.name if dist else "?",
                version=dist.version if dist else "?",
            )
            try:
                module = entry_point.load()
            except Exception as exc:
                failures.append(PluginFailure(entry_point.name, provider.distribution, _describe(exc)))
                continue
            register(module, provider)

    for path in _unique_paths(local_plugins):
        for file_or_package in _plugin_modules_at(path, failures):
            provider = Provider(plugin=_local_name(file_or_package), distribution=f"local: {file_or_package}",
                                version="-")
            try:
                module = _import_local(file_or_package)
            except Exception as exc:
                failures.append(PluginFailure(provider.plugin, str(file_or_package), _describe(exc)))
                continue
            register(module, provider)

    registry = Registry(failures=failures)
    conflicts: list[str] = []
    for kind in KINDS:
        caller = getattr(manager.hook, f"clear_bench_{kind}")
        table = registry.of_kind(kind)
        for impl in caller.get_hookimpls():  # in registration order
            provider = providers[impl.plugin_name]
            try:
                specs = list(impl.function() or [])
            except Exception as exc:
                failures.append(PluginFailure(provider.plugin, provider.distribution,
                                              f"hook clear_bench_{kind} raised {_describe(exc)}"))
                continue
            for spec in specs:
                if not isinstance(spec, _SPEC_TYPES[kind]):
                    failures.append(PluginFailure(
                        provider.plugin, provider.distribution,
                        f"clear_bench_{kind} returned {type(spec).__name__}, expected "
                        f"{_SPEC_TYPES[kind].__name__}"))
                    continue
                if spec.name in table:
                    other = table[spec.name].provider
                    conflicts.append(
                        f"{kind[:-1]} '{spec.name}' is provided by both {_who(other)} and {_who(provider)}"
                    )
                    continue
                table[spec.name] = Registered(spec, provider)
    if conflicts:
        raise PluginError(conflicts[0], lines=conflicts)
    return registry


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (entry_point.name, entry_point.value)
        if key in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(key)
        yield entry_point


def _unknown_hooks(module: ModuleType) -> list[str]:
    known = {f"clear_bench_{kind}" for kind in KINDS}
    return sorted(
        name for name in vars(module)
        if name.startswith("clear_bench_") and callable(vars(module)[name]) and name not in known
        and hasattr(vars(module)[name], f"{PROJECT}_impl")
    )


def _who(provider: Provider) -> str:
    if provider.distribution.startswith("local: "):
        return f"plugin '{provider.plugin}' ({provider.distribution})"
    return f"plugin '{provider.plugin}' ({provider.distribution} {provider.version})"


def _describe(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {frame.filename}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _unique_paths(paths: Sequence[str | Path]) -> list[Path]:
    unique: list[Path] = []
    for path in paths:
        resolved = Path(path).expanduser().resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def _plugin_modules_at(path: Path, failures: list[PluginFailure]) -> list[Path]:
    if path.is_file() and path.suffix == ".py":
        return [path]
    if path.is_dir() and (path / "__init__.py").is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
    failures.append(PluginFailure(path.name, str(path), "no such plugin file or folder"))
    return []


def _local_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _import_local(path: Path) -> ModuleType:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    module_name = f"clear_bench_local_{_local_name(path).replace('-', '_')}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
