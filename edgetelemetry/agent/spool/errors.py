"""The spool's errors: every one an ``EdgeTelemetryError`` whose message says why."""

from __future__ import annotations

from ...errors import EdgeTelemetryError

__all__ = [
    "RecordTooLargeError",
    "SpoolClosedError",
    "SpoolError",
    "SpoolLockedError",
    "SpoolPermissionError",
]


class SpoolError(EdgeTelemetryError):
    """The spool could not do what was asked (I/O failure, bad state); the message says why."""


class SpoolLockedError(SpoolError):
    """Another process (or another ``Spool`` in this one) already owns the directory."""


class SpoolPermissionError(SpoolError):
    """The directory or a file in it belongs to someone else or is not what it should be."""


class SpoolClosedError(SpoolError):
    """The spool was closed; open a new one."""


class RecordTooLargeError(SpoolError, ValueError):
    """A record that could never fit the spool's byte bound; it was not stored."""
