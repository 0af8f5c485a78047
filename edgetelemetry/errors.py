"""The exceptions edgetelemetry raises.  Recording never raises; everything else may."""

from __future__ import annotations

__all__ = [
    "EdgeTelemetryError",
    "CoreError",
    "NameClashError",
    "NamesFullError",
    "RegistrationError",
    "SeriesLimitError",
    "SnapshotFormatError",
    "RecorderClosedError",
    "UnitConflictError",
]


class EdgeTelemetryError(Exception):
    """Base class of every error this package raises on purpose."""


class CoreError(EdgeTelemetryError):
    """A C core call failed; ``code`` is the negative ``ET_E*`` code, the message names it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class RegistrationError(EdgeTelemetryError, ValueError):
    """A series could not be registered; the message says which rule or limit, and what to do.

    Raised by ``Recorder.histogram`` (never by recording).  The subclasses tell the causes
    apart; a name that breaks a naming rule raises a plain ``ValueError``."""


class SeriesLimitError(RegistrationError):
    """``max_series`` series are registered: create the Recorder with a larger one."""


class NamesFullError(RegistrationError):
    """The series' names do not fit in ``names_bytes``: create the Recorder with more."""


class UnitConflictError(RegistrationError):
    """The series exists with another unit (one series has one unit)."""


class NameClashError(RegistrationError):
    """Another series of the model, version and dimension reports under the same name
    (``latency`` in ``ms`` and ``latency-ms`` are both ``latency-ms-*`` in a heartbeat).
    ``existing`` is that series' ``(model, version, metric, dimension, unit)``."""

    def __init__(
        self, message: str, existing: tuple[str, str, str, str | None, str | None]
    ) -> None:
        super().__init__(message)
        self.existing = existing


class RecorderClosedError(EdgeTelemetryError):
    """The recorder was closed; create a new one."""


class SnapshotFormatError(EdgeTelemetryError, ValueError):
    """Bytes that are not a snapshot this version can read: truncated, garbage or too new."""
