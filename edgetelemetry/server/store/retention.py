"""Retention: raw heartbeats older than ``keep_raw`` are rolled up into hourly aggregates per
series (device, model, version, metric, dimension), which are dropped after ``keep_hourly``.

What an hour keeps of a series' values (``aggregate``): how many, their sum, minimum and
maximum (these merge exactly, whatever order heartbeats arrive in), and their mean weighted by
the inference count of the window each came from (the ``-count`` metric of the same family in
the same heartbeat: ``latency-ms-p99`` is weighted by ``latency-ms-count``).  For ``-mean`` the
weighted mean is the exact mean; for a percentile it is an approximation (a mean of the windows'
percentiles), which the minimum and maximum of those percentiles bound exactly: the hour's p99
lies between the lowest and the highest window p99.

``Compactor`` runs ``store.compact`` on a background thread of the server.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ...recording.naming import STAT_SUFFIXES
from .base import DEFAULT_KEEP_HOURLY, DEFAULT_KEEP_RAW, CompactionReport
from .codec import decode_points
from .request import SeriesKey

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_INTERVAL",
    "Compactor",
    "Hourly",
    "aggregate",
    "check_retention",
    "statistic",
]

logger = logging.getLogger(__name__)

HOUR = 3600
DEFAULT_INTERVAL = 600.0  # seconds between passes in the server
DEFAULT_BUDGET = 2.0  # seconds of work at most per pass
_CATCH_UP = 1.0  # seconds before the next pass when one ran out of budget
_FIRST_PASS = 10.0  # seconds after start
_WEIGHTED = frozenset(s for s in STAT_SUFFIXES if s == "mean" or s[1:].isdigit())


def statistic(metric: str) -> str:
    """The statistic a metric name ends with (``count``, ``p99``...), or ``gauge``."""
    stat = metric.rpartition("-")[2]
    return stat if stat in STAT_SUFFIXES else "gauge"


def check_retention(keep_raw: float, keep_hourly: float) -> None:
    if not (math.isfinite(keep_raw) and keep_raw >= HOUR):
        raise ValueError("raw heartbeats must be kept at least an hour (keep_raw >= 3600 s)")
    if not (math.isfinite(keep_hourly) and keep_hourly >= keep_raw):
        raise ValueError("hourly rollups must be kept at least as long as raw heartbeats")


@dataclass
class Hourly:
    """One hour of one series, as merged so far."""

    points: int = 0
    total: float = 0.0
    minimum: float | None = None
    maximum: float | None = None
    weighted: float = 0.0
    weight: float = 0.0

    def add(self, value: float, weight: float) -> None:
        self.points += 1
        self.total += value
        self.minimum = value if self.minimum is None else min(self.minimum, value)
        self.maximum = value if self.maximum is None else max(self.maximum, value)
        self.weighted += value * weight
        self.weight += weight


def aggregate(
    rows: Iterable[tuple[float, bytes]], series: Mapping[int, SeriesKey]
) -> dict[tuple[int, int], Hourly]:
    """``{(hour, series number): Hourly}`` of raw heartbeat rows ``(ts, points blob)``."""
    out: dict[tuple[int, int], Hourly] = {}
    for base, blob in rows:
        points = list(decode_points(blob, base))
        counts: dict[tuple[int, str, str, str, str], float] = {}
        for number, value, _ in points:
            key = series.get(number)
            if key is not None and value is not None and statistic(key[3]) == "count":
                counts[(key[0], key[1], key[2], key[3].rpartition("-")[0], key[4])] = value
        for number, value, ts in points:
            key = series.get(number)
            if key is None or value is None:
                continue
            weight = 1.0
            if statistic(key[3]) in _WEIGHTED:
                family = (key[0], key[1], key[2], key[3].rpartition("-")[0], key[4])
                weight = max(0.0, counts.get(family, 1.0))
            hourly = out.setdefault((math.floor(ts / HOUR), number), Hourly())
            hourly.add(value, weight)
    return out


class Compactable(Protocol):
    def compact(self, *, keep_raw: float = DEFAULT_KEEP_RAW,
                keep_hourly: float = DEFAULT_KEEP_HOURLY, budget: float | None = None,
                now: float | None = None) -> CompactionReport: ...


class Compactor:
    """Compacts a store on a daemon thread: a pass every ``interval`` seconds, each at most
    ``budget`` seconds of small transactions (ingestion goes on between them); a pass that ran
    out of budget is followed by the next one after a second, until it has caught up.

    ``start()``, ``stop()``; errors are logged and the next pass tries again.
    """

    def __init__(
        self,
        store: Compactable,
        *,
        keep_raw: float = DEFAULT_KEEP_RAW,
        keep_hourly: float = DEFAULT_KEEP_HOURLY,
        interval: float = DEFAULT_INTERVAL,
        budget: float = DEFAULT_BUDGET,
    ) -> None:
        check_retention(keep_raw, keep_hourly)
        if not (interval > 0 and budget > 0):
            raise ValueError("interval and budget must be positive")
        self.store = store
        self.keep_raw = keep_raw
        self.keep_hourly = keep_hourly
        self.interval = interval
        self.budget = budget
        self.passes = 0
        self.last: CompactionReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("compactor already started")
        self._thread = threading.Thread(
            target=self._run, name="edgetelemetry-compactor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> CompactionReport:
        report = self.store.compact(
            keep_raw=self.keep_raw, keep_hourly=self.keep_hourly, budget=self.budget
        )
        self.passes += 1
        self.last = report
        if report.heartbeats_rolled_up or report.rollups_dropped:
            logger.info(
                "compaction: %d heartbeats rolled up into %d hourly rows, %d hourly rows "
                "dropped in %.2f s%s",
                report.heartbeats_rolled_up,
                report.rollup_rows_merged,
                report.rollups_dropped,
                report.seconds,
                "" if report.complete else " (more next pass)",
            )
        return report

    def _run(self) -> None:
        wait = min(self.interval, _FIRST_PASS)  # catch up soon after a start
        while not self._stop.wait(wait):
            try:
                wait = self.interval if self.run_once().complete else _CATCH_UP
            except Exception:  # the store may be unreachable for a while: try again later
                logger.exception("compaction pass failed; next one in %.0f s", self.interval)
                wait = self.interval
