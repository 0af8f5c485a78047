"""The fleet view: ``queries`` (status and latency series from a store), ``text`` (the
terminal table of ``edgetelemetry fleet status``), ``web`` (the page at ``GET /fleet``, with
its ``static/`` files)."""

from __future__ import annotations

# the store a status is read from, opened read-only beside a running server
from ..store import open_read_only  # noqa: E402
from .queries import (
    DEFAULT_OFFLINE_AFTER,
    LATENCY_PREFIX,
    PERCENTILES,
    DeviceStatus,
    FleetStatus,
    LatencyFigures,
    LatencySeries,
    ModelStatus,
    fleet_status,
    latency_series,
)
from .text import render_text

__all__ = [
    "DEFAULT_OFFLINE_AFTER",
    "LATENCY_PREFIX",
    "PERCENTILES",
    "DeviceStatus",
    "FleetStatus",
    "LatencyFigures",
    "LatencySeries",
    "ModelStatus",
    "fleet_status",
    "latency_series",
    "open_read_only",
    "render_text",
]
