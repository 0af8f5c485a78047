"""The exceptions edgetelemetry raises.  Recording never raises; everything else may."""

from __future__ import annotations

__all__ = [
    "EdgeTelemetryError",
    "AgentBusyError",
    "CoreError",
    "LayoutMismatchError",
    "LockTimeoutError",
    "NoSegmentError",
    "NotASegmentError",
    "NotOwnerError",
    "ProcessTableFullError",
    "SegmentConfigError",
    "SegmentPermissionError",
    "SegmentTruncatedError",
    "SharedRecorderError",
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


class SharedRecorderError(CoreError):
    """A shared recorder (the device agent's segment) could not be used as asked.

    ``path`` is the segment's file.  The subclasses tell the causes apart, one per core code;
    each message says what to do.  A system call's other failures are ``OSError`` (errno)."""

    def __init__(self, code: int, message: str, path: str | None = None) -> None:
        super().__init__(code, message)
        self.path = path


class NoSegmentError(SharedRecorderError):
    """Nothing at the path: the agent has not created its segment there (not running, or
    another ``segment_path``)."""


class NotASegmentError(SharedRecorderError):
    """The path holds something else than a shared recorder, or a damaged header."""


class LayoutMismatchError(SharedRecorderError):
    """The segment has another layout version than this library reads: the producer and the
    agent come from different edgetelemetry versions.  ``file_layout`` is the segment's (0 when
    unreadable), ``library_layout`` this library's."""

    def __init__(self, code: int, message: str, path: str | None, file_layout: int,
                 library_layout: int) -> None:
        super().__init__(code, message, path)
        self.file_layout = file_layout
        self.library_layout = library_layout


class SegmentPermissionError(SharedRecorderError):
    """This process may not open the segment for writing: its user is not in the segment's
    group (``group`` names it, None when unknown)."""

    def __init__(self, code: int, message: str, path: str | None, group: str | None) -> None:
        super().__init__(code, message, path)
        self.group = group


class ProcessTableFullError(SharedRecorderError):
    """Every process slot of the segment is taken: raise the agent's ``max_processes``."""


class NotOwnerError(SharedRecorderError):
    """Only the agent that owns the segment may do this (close windows, collect, reap)."""


class AgentBusyError(SharedRecorderError):
    """Another live agent owns the segment: one agent per segment."""


class SegmentConfigError(SharedRecorderError):
    """A segment is there with another configuration (sizes) than the agent was given."""


class SegmentTruncatedError(SharedRecorderError):
    """The segment's file is shorter than its layout: truncated on disk or under the agent."""


class LockTimeoutError(SharedRecorderError):
    """A live process held the segment's lock past the agent's timeout; nothing changed.
    Retryable: the agent tries again at its next tick."""


class RecorderClosedError(EdgeTelemetryError):
    """The recorder was closed; create a new one."""


class SnapshotFormatError(EdgeTelemetryError, ValueError):
    """Bytes that are not a snapshot this version can read: truncated, garbage or too new."""
