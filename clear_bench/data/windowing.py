"""HU windowing: map Hounsfield units to [0, 1] intensities for a 2D encoder."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from clear_bench.errors import ConfigError


@dataclass(frozen=True)
class Window:
    """A display window: intensities ``level - width/2 .. level + width/2`` HU map to 0..1."""

    name: str
    width: float
    level: float

    def apply(self, hu: np.ndarray) -> np.ndarray:
        low = self.level - self.width / 2.0
        return np.clip((np.asarray(hu, dtype=np.float32) - low) / self.width, 0.0, 1.0)


PRESETS: dict[str, Window] = {
    "soft-tissue": Window("soft-tissue", 400.0, 40.0),
    "lung": Window("lung", 1500.0, -600.0),
    "bone": Window("bone", 1800.0, 400.0),
}

_ALIASES = {"soft_tissue": "soft-tissue", "softtissue": "soft-tissue", "soft": "soft-tissue",
            "abdomen": "soft-tissue", "mediastinum": "soft-tissue"}
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_WL_PATTERN = re.compile(rf"^\s*W\s*({_NUMBER})\s*[/,_ ]?\s*L\s*({_NUMBER})\s*$", re.IGNORECASE)
_LW_PATTERN = re.compile(rf"^\s*L\s*({_NUMBER})\s*[/,_ ]?\s*W\s*({_NUMBER})\s*$", re.IGNORECASE)


def parse_window(spec: str | Mapping[str, Any] | Window) -> Window:
    """A :class:`Window` from a preset name (``"lung"``), ``"W400L40"`` / ``"L40W400"`` / ``"W1500/L-600"``,
    or a mapping ``{width, level}`` (optionally ``name``). Raises :class:`ConfigError` when malformed."""
    if isinstance(spec, Window):
        return spec
    if isinstance(spec, Mapping):
        missing = [key for key in ("width", "level") if key not in spec]
        if missing:
            raise ConfigError(f"window {dict(spec)!r}: missing field(s) {', '.join(missing)}")
        try:
            width, level = float(spec["width"]), float(spec["level"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"window {dict(spec)!r}: width and level must be numbers") from exc
        name = str(spec.get("name") or _custom_name(width, level))
        return _checked(Window(name, width, level), spec)
    if not isinstance(spec, str):
        raise ConfigError(f"window {spec!r}: expected a preset name, 'W<width>L<level>' or {{width, level}}")
    key = spec.strip().lower()
    key = _ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    match = _WL_PATTERN.match(spec)
    if match:
        width, level = float(match.group(1)), float(match.group(2))
    elif (match := _LW_PATTERN.match(spec)) is not None:
        level, width = float(match.group(1)), float(match.group(2))
    else:
        known = ", ".join(PRESETS)
        raise ConfigError(f"window '{spec}': not a preset ({known}) nor 'W<width>L<level>' (e.g. W400L40)")
    return _checked(Window(_custom_name(width, level), width, level), spec)


def window_name(spec: str | Mapping[str, Any] | Window) -> str:
    """The canonical name of a window spec (preset name or ``W<width>L<level>``)."""
    return parse_window(spec).name


def _custom_name(width: float, level: float) -> str:
    return f"W{width:g}L{level:g}"


def _checked(window: Window, spec: Any) -> Window:
    if not window.width > 0:
        raise ConfigError(f"window {spec!r}: width must be positive, got {window.width:g}")
    return window
