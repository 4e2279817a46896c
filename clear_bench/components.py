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
from clear_bench.schema import Options, resolve_options
from clear_bench.specs import Encoder, EncoderSpec, ScanSource, TaskData, TaskSpec


def split_component(value: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of a component reference: a name, or a mapping with ``name``."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    raise ConfigError(f"component {value!r}: expected a name or a mapping with 'name'")


def build_options(registry: Registry, declared: Options, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``given``; every option naming a component is replaced by that component,
    built (recursively) from the registry."""
    values = resolve_options(declared, given)
    for key, option in declared.items():
        if option.component and values.get(key) is not None and not _is_built(values[key]):
            name, nested = split_component(values[key])
            values[key] = build_component(registry, option.component, name, nested)
    return values


def build_component(registry: Registry, kind: str, name: str, options: Mapping[str, Any] | None) -> Any:
    """Build the ``kind`` component ``name`` (sources are built; tasks are loaded)."""
    spec = registry.get(kind, name)
    values = build_options(registry, spec.options, options)
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
    data = spec.load(build_options(registry, spec.options, options))
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
