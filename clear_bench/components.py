"""Building registered components from checked options, nested components included.

An option declared with ``component="sources"`` (a task's ``source``) holds a name or ``{name: ...,
<its options>}``; the core builds that component from the same registry, so a source from a ``--plugin``
file serves a task of another plugin exactly like an installed one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clear_bench.errors import ConfigError, DataError
from clear_bench.registry import Registry
from clear_bench.schema import Options, Problems, check_value, resolve_options, suggest
from clear_bench.specs import Encoder, EncoderSpec, ScanSource, TaskData, TaskSpec


def split_component(value: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of a component reference: a name, or a mapping with ``name``."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    raise ConfigError(f"component {value!r}: expected a name or a mapping with 'name'")


def build_options(registry: Registry, declared: Options, given: Mapping[str, Any] | None, *,
                  owner: str = "options") -> dict[str, Any]:
    """Defaults overlaid with ``given`` (checked: unknown keys, types, required options); every option
    naming a component is replaced by that component, built (recursively) from the registry."""
    check_given(declared, given or {}, owner)
    values = resolve_options(declared, given)
    for key, option in declared.items():
        if option.component and values.get(key) is not None and not _is_built(values[key]):
            name, nested = split_component(values[key])
            values[key] = build_component(registry, option.component, name, nested)
    return values


def check_given(declared: Options, given: Mapping[str, Any], owner: str) -> None:
    """Refuse unknown keys, wrong types and missing required options, all in one :class:`ConfigError`
    (``None`` stands for "the default"; components already built pass as they are)."""
    problems = Problems(owner)
    for key, value in given.items():
        if key not in declared:
            expected = ", ".join(declared) or "none"
            problems.add(key, f"unknown option{suggest(key, declared)}; expected: {expected}")
        elif value is not None and not _is_built(value):
            check_value(value, declared[key], key, problems)
    for key, option in declared.items():
        if option.required and given.get(key) is None:
            problems.add(key, f"required option is missing ({option.help})")
    problems.raise_if_any()


def build_component(registry: Registry, kind: str, name: str, options: Mapping[str, Any] | None) -> Any:
    """Build the ``kind`` component ``name`` (sources are built; tasks are loaded)."""
    spec = registry.get(kind, name)
    values = build_options(registry, spec.options, options, owner=f"{kind[:-1]} '{name}'")
    if kind == "tasks":
        return spec.load(values)
    return spec.build(values)


def build_source(registry: Registry, value: str | Mapping[str, Any]) -> ScanSource:
    """The scan source a reference names (``"synthetic"`` or ``{name: folder, root: ...}``)."""
    name, options = split_component(value)
    return build_component(registry, "sources", name, options)


def load_task(registry: Registry, spec: TaskSpec, options: Mapping[str, Any] | None, *,
              task_id: str | None = None) -> TaskData:
    """Load a task's data; a task whose scans carry no label is a :class:`DataError`."""
    data = spec.load(build_options(registry, spec.options, options, owner=f"task '{task_id or spec.name}'"))
    if not data.labels:
        raise DataError(f"task '{task_id or spec.name}': no scan has a label")
    return data


def build_encoder(spec: EncoderSpec, options: Mapping[str, Any] | None = None) -> Encoder:
    """Build a registered encoder; its options (bar weight paths) are recorded for the cache key."""
    values = resolve_options(spec.options, options)
    encoder = spec.build(values)
    if not encoder.options:
        encoder.options = {k: v for k, v in values.items()
                           if not (k in spec.options and spec.options[k].type is Path)}
    return encoder


def _is_built(value: Any) -> bool:
    return not isinstance(value, str | Mapping)
