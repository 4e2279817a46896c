"""One module per ``clear-bench`` sub-command; each offers ``add_parser(subparsers)`` and ``run(args)``.

Commands only parse arguments, call the stages or the API, and print.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clear_bench.registry import Registry

early_plugin_paths: list[str] = []
"""``--plugin`` paths parsed before the full command line, for commands whose flags come from plugins."""

_registries: dict[tuple[str, ...], Registry] = {}


def early_registry() -> Registry:
    """The registry of installed plugins and the early ``--plugin`` paths, loaded once per command line."""
    from clear_bench.registry import load_registry

    key = tuple(early_plugin_paths)
    if key not in _registries:
        _registries[key] = load_registry(list(key))
    return _registries[key]
