"""edgetelemetry: per-inference telemetry for edge devices, sent as Edge Manager heartbeats."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AgentBusyError,
    CoreError,
    EdgeTelemetryError,
    LayoutMismatchError,
    LockTimeoutError,
    NameClashError,
    NamesFullError,
    NoSegmentError,
    NotASegmentError,
    NotOwnerError,
    ProcessTableFullError,
    RecorderClosedError,
    RegistrationError,
    SegmentConfigError,
    SegmentPermissionError,
    SegmentTruncatedError,
    SeriesLimitError,
    SharedRecorderError,
    SnapshotFormatError,
    UnitConflictError,
)
from .recording import Group, Histogram, Recorder, Timer
from .snapshot import HistogramLayout, SeriesSnapshot, Snapshot

if TYPE_CHECKING:
    from .agent import Agent

__all__ = [
    "Agent",
    "AgentBusyError",
    "CoreError",
    "EdgeTelemetryError",
    "Group",
    "Histogram",
    "HistogramLayout",
    "LayoutMismatchError",
    "LockTimeoutError",
    "NameClashError",
    "NamesFullError",
    "NoSegmentError",
    "NotASegmentError",
    "NotOwnerError",
    "ProcessTableFullError",
    "Recorder",
    "RecorderClosedError",
    "RegistrationError",
    "SegmentConfigError",
    "SegmentPermissionError",
    "SegmentTruncatedError",
    "SeriesLimitError",
    "SeriesSnapshot",
    "SharedRecorderError",
    "Snapshot",
    "SnapshotFormatError",
    "Timer",
    "UnitConflictError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The agent pulls in the spool, sender and heartbeat modules: import it on first use only.
    if name == "Agent":
        from .agent import Agent

        return Agent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
