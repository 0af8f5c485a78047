"""edgetelemetry: per-inference telemetry for edge devices, sent as Edge Manager heartbeats."""

from __future__ import annotations

from .errors import CoreError, EdgeTelemetryError, RecorderClosedError, SnapshotFormatError
from .snapshot import HistogramLayout, SeriesSnapshot, Snapshot

__version__ = "0.1.0"

__all__ = [
    "CoreError",
    "EdgeTelemetryError",
    "HistogramLayout",
    "RecorderClosedError",
    "SeriesSnapshot",
    "Snapshot",
    "SnapshotFormatError",
    "__version__",
]
