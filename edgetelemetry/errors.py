"""The exceptions edgetelemetry raises.  Recording never raises; everything else may."""

from __future__ import annotations

__all__ = [
    "EdgeTelemetryError",
    "CoreError",
    "SnapshotFormatError",
    "RecorderClosedError",
]


class EdgeTelemetryError(Exception):
    """Base class of every error this package raises on purpose."""


class CoreError(EdgeTelemetryError):
    """A C core call failed; ``code`` is the negative ``ET_E*`` code, the message names it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class RecorderClosedError(EdgeTelemetryError):
    """The recorder was closed; create a new one."""


class SnapshotFormatError(EdgeTelemetryError, ValueError):
    """Bytes that are not a snapshot this version can read: truncated, garbage or too new."""
