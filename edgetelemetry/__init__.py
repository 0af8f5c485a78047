"""edgetelemetry: per-inference telemetry for edge devices, sent as Edge Manager heartbeats."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    CoreError,
    EdgeTelemetryError,
    NameClashError,
    NamesFullError,
    RecorderClosedError,
    RegistrationError,
    SeriesLimitError,
    SnapshotFormatError,
    UnitConflictError,
)
from .recording import Group, Histogram, Recorder, Timer
from .snapshot import HistogramLayout, SeriesSnapshot, Snapshot

if TYPE_CHECKING:
    from .agent import Agent

__all__ = [
    "Agent",
    "CoreError",
    "EdgeTelemetryError",
    "Group",
    "Histogram",
    "HistogramLayout",
    "NameClashError",
    "NamesFullError",
    "Recorder",
    "RecorderClosedError",
    "RegistrationError",
    "SeriesLimitError",
    "SeriesSnapshot",
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
