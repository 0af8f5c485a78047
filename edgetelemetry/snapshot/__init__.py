"""Snapshots: one closed window of a recorder, as plain data that encodes to msgpack and merges.

The unit passed between the stages.  The format is documented in ``docs/snapshot-format.md``
and pinned by a golden-file test.  Pure Python: it knows nothing of the C core, so snapshots
can be decoded, merged and inspected on any machine (the fleet endpoint, a notebook).
``layout`` (``HistogramLayout``), ``series`` (``SeriesSnapshot``), ``snapshot`` (``Snapshot``,
``SnapshotSource``), ``codec`` (the wire form's helpers).
"""

from __future__ import annotations

from .layout import HistogramLayout
from .series import SeriesSnapshot
from .snapshot import (
    RECORDER_COUNTERS,
    RECORDER_GAUGES,
    SCHEMA_VERSION,
    Snapshot,
    SnapshotSource,
)

__all__ = [
    "RECORDER_COUNTERS",
    "RECORDER_GAUGES",
    "SCHEMA_VERSION",
    "HistogramLayout",
    "SeriesSnapshot",
    "Snapshot",
    "SnapshotSource",
]
