"""The one option schema: declared :class:`Option`s, checked the same way wherever values come from.

A benchmark YAML section, a plugin component's ``options:``, a pretraining recipe, ``KEY=VALUE`` flags
(``--option``) and the flags of a subcommand are all declared as ``{name: Option}`` mappings and checked
here. Every problem becomes one line naming where it is (``file:line: key.path: message``, or
``command line: --flag: message``); all problems of one input are reported together.

Why not pydantic: options are declared by plugins as plain data that ``clear-bench plugins`` lists and
that must import no heavy dependency, every message must carry the YAML line of the key, and the checks
are few (type, choices, required, paths relative to the YAML's folder, a nested component).
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clear_bench.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One declared option: its accepted type(s), default, help text and constraints."""

    type: type | tuple[type, ...]
    default: Any = None
    help: str = ""
    choices: Sequence[Any] | None = None
    required: bool = False
    must_exist: bool = True
    """For ``type=Path``: the file or folder must exist (inputs); False for output or cache folders.
    Either way a relative path is taken from the YAML file's folder (the working folder on a command
    line)."""
    component: str | None = None
    """The value names another component of this kind (e.g. ``"sources"``): a name, or a mapping with
    ``name`` and that component's own options. The core validates it and builds the component."""

    def types(self) -> tuple[type, ...]:
        """The accepted Python types (``Path`` options are written as strings)."""
        return self.type if isinstance(self.type, tuple) else (self.type,)

    def type_name(self) -> str:
        return " or ".join("null" if t is type(None) else t.__name__ for t in self.types())


Options = Mapping[str, Option]


def resolve_options(declared: Options, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults of ``declared`` overlaid with ``given`` (already checked)."""
    values = {key: opt.default for key, opt in declared.items()}
    values.update(given or {})
    return values


class Problems:
    """Collects one line per problem, each located in its input (a YAML file, or the command line)."""

    def __init__(self, source: str | Path, lines: Mapping[str, int] | None = None) -> None:
        self.source = str(source)
        self.lines = lines or {}
        self.items: list[str] = []

    def add(self, key_path: str, message: str) -> None:
        line = self._line_of(key_path)
        where = f"{self.source}:{line}" if line else self.source
        self.items.append(f"{where}: {key_path or '<top>'}: {message}")

    def raise_if_any(self) -> None:
        """Raise :class:`ConfigError` listing every problem, if there is one."""
        if self.items:
            raise ConfigError(self.items[0], lines=list(self.items))

    def _line_of(self, key_path: str) -> int | None:
        """The line of ``key_path``, or of its nearest parent that exists in the file."""
        while key_path not in self.lines:
            parent = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", key_path)
            if parent == key_path:
                return None
            key_path = parent
        return self.lines[key_path] or None


def read_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """Safely parse a YAML file; returns the data and a map from key path to 1-based line number."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)  # only some YAML errors carry a position
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    lines: dict[str, int] = {}
    if node is not None:
        _index_lines(node, "", lines)
    return data, lines


def _index_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _index_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, f"{prefix}[{index}]", lines)


_UNSET = object()


def check_value(value: Any, option: Option, key_path: str, problems: Problems,
                base: Path | None = None) -> Any:
    """``value`` checked against ``option``; a ``Path`` option comes back absolute (relative to ``base``,
    default the working folder). Returns :data:`INVALID` after reporting a problem."""
    types = option.types()
    if option.type is Path:
        types = (str,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        problems.add(key_path, f"expected {option.type_name()}, got {describe(value)}")
        return INVALID
    if option.choices is not None and value not in option.choices:
        choices = ", ".join(str(c) for c in option.choices)
        problems.add(key_path, f"expected one of {choices}, got {value!r}")
        return INVALID
    if option.type is Path:
        resolved = ((base or Path.cwd()) / str(value)).expanduser().resolve()
        if option.must_exist and not resolved.exists():
            problems.add(key_path, f"file not found: {resolved}")
            return INVALID
        return str(resolved)
    return value


INVALID: Any = _UNSET
"""What :func:`check_value` returns for a value it reported as a problem."""


def check_mapping(data: Mapping[str, Any], declared: Options, prefix: str, problems: Problems, *,
                  base: Path | None = None, defaults: bool = True) -> dict[str, Any]:
    """The checked values of ``data`` against ``declared`` (with the defaults of missing keys unless
    ``defaults=False``); unknown keys, wrong types and missing required keys are reported."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{prefix}.{key}" if prefix else str(key)
        if key not in declared:
            problems.add(key_path, f"unknown key{suggest(str(key), declared)}; expected one of: "
                                   f"{', '.join(declared) or 'nothing'}")
            continue
        checked = check_value(value, declared[key], key_path, problems, base)
        if checked is not INVALID:
            values[key] = checked
    for key, option in declared.items():
        if key not in data:
            if option.required:
                problems.add(f"{prefix}.{key}" if prefix else key, f"required key is missing ({option.help})")
            elif defaults:
                values[key] = option.default
    return values


def parse_assignments(pairs: Sequence[str], declared: Options, *, flag: str, owner: str) -> dict[str, Any]:
    """``KEY=VALUE`` command-line pairs as checked options; a value is read as a YAML scalar or list
    (``depth=2``, ``windows=[lung, bone]``), a ``Path`` relative to the working folder.

    Raises :class:`ConfigError` listing every problem, each naming ``flag`` and ``owner``.
    """
    problems = Problems("command line")
    raw: dict[str, Any] = {}
    for pair in pairs:
        match = re.fullmatch(r"([A-Za-z_][\w-]*)=(.*)", pair, flags=re.S)
        if not match:
            problems.items.append(f"command line: {flag} {pair!r}: expected KEY=VALUE")
            continue
        key, text = match.groups()
        option = declared.get(key)
        if option is None:
            expected = ", ".join(declared) or "no options"
            problems.items.append(f"command line: {flag} {key}: unknown option of {owner}"
                                  f"{suggest(key, declared)}; expected: {expected}")
            continue
        raw[key] = _scalar(text, option)
    values = {}
    for key, value in raw.items():
        checked = check_value(value, declared[key], f"{flag} {key}", problems)
        if checked is not INVALID:
            values[key] = checked
    problems.raise_if_any()
    return values


def _scalar(text: str, option: Option) -> Any:
    if option.type is Path or (option.types() == (str,)):
        return text
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text
    if str in option.types() and not isinstance(value, option.types()):
        return text  # e.g. arch=123 for a str option
    return value


def add_flags(parser: argparse.ArgumentParser | Any, declared: Options, *,
              exclude: Sequence[str] = ()) -> None:
    """One ``--name`` flag per declared option (``_`` written as ``-``), typed by the option; the
    parsed value is ``None`` when the flag is not given, so :func:`given_flags` knows what was set."""
    for key, option in declared.items():
        if key in exclude:
            continue
        flag = "--" + key.replace("_", "-")
        types = [t for t in option.types() if t is not type(None)]
        default_text = "" if option.default in (None, [], {}) else f" (default: {option.default})"
        kwargs: dict[str, Any] = {"dest": key, "default": None, "help": f"{option.help}{default_text}"}
        if option.choices is not None:
            kwargs["choices"] = list(option.choices)
        if types == [bool]:
            kwargs["type"] = _parse_bool
            kwargs["metavar"] = "true|false"
        elif types == [list]:
            kwargs["type"] = lambda text: [part.strip() for part in text.split(",") if part.strip()]
            kwargs["metavar"] = "A,B,..."
        elif types and types[0] in (int, float, str):
            kwargs["type"] = float if float in types else types[0]
        parser.add_argument(flag, **kwargs)


def given_flags(args: argparse.Namespace, declared: Options, *, base: Path | None = None) -> dict[str, Any]:
    """The options set on the command line (flags added by :func:`add_flags`), checked."""
    problems = Problems("command line")
    values = {}
    for key, option in declared.items():
        value = getattr(args, key, None)  # flags of other commands are absent from the namespace
        if value is None:
            continue
        checked = check_value(value, option, "--" + key.replace("_", "-"), problems, base)
        if checked is not INVALID:
            values[key] = checked
    problems.raise_if_any()
    return values


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def suggest(word: str, candidates: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or nothing."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe(value: Any) -> str:
    """A value as an error message shows it: its type and a short repr."""
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
