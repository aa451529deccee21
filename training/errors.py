"""Errors raised by the training package.

Every refusal derives from :class:`TrainingError`, so the CLI can print one clear line and exit
non-zero instead of a traceback, and callers can tell "the input was refused" from a crash.
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: training refused to run on the given input or state."""


class DatasetError(TrainingError, ValueError):
    """Interaction data that cannot be used: a missing file or column, an empty table, bad values.

    The message always names the file (and the column or line) concerned.
    """


class ConfigError(TrainingError, ValueError):
    """A configuration that cannot work (e.g. dims that shrink for a truncating strategy)."""


class StateError(TrainingError):
    """The work directory's training state is missing, inconsistent, or asks for the wrong version."""


class DeviceError(TrainingError):
    """The requested torch device is not available on this machine."""
