"""edgetelemetry: per-inference telemetry for edge devices, sent as Edge Manager heartbeats."""

from __future__ import annotations

from .errors import CoreError, EdgeTelemetryError, RecorderClosedError, SnapshotFormatError
from .recorder import Histogram, Recorder, Timer
from .snapshot import HistogramLayout, SeriesSnapshot, Snapshot

__version__ = "0.1.0"

__all__ = [
    "CoreError",
    "EdgeTelemetryError",
    "Histogram",
    "HistogramLayout",
    "Recorder",
    "RecorderClosedError",
    "SeriesSnapshot",
    "Snapshot",
    "SnapshotFormatError",
    "Timer",
    "__version__",
]
