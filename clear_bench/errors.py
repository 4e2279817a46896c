"""Errors that are the user's to fix: the CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, data, plugin): shown as a plain message, exit code 2."""

    def __init__(self, message: str, *, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or [message]


class ConfigError(UserError):
    """One or more problems in a YAML config; ``lines`` holds one line per problem."""


class PluginError(UserError):
    """A plugin could not be loaded, or two plugins provide the same name."""


class WeightsNotFoundError(UserError):
    """Pretrained weights are missing; the message says where the loader looked and how to provide them."""


class UnusableWeightsError(UserError):
    """Weights that exist but cannot be used: unreadable, refused as unsafe, or not matching the model. A
    run leaves that encoder out (and says why) instead of stopping."""


class DataError(UserError):
    """A scan, label file or annotation cannot be read; the message names the file and the field."""


class DiskFullError(UserError):
    """A file could not be written for want of space (a full disk, a quota, a file-size limit); the
    message names the file. Nothing was left under its name, so a rerun with space reuses what finished."""
