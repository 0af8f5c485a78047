"""The queries of the fleet view, in any SQL backend (a mixin of ``SqlStore``).

Names are kept once per device in ``series``, with the newest value of each: the fleet status
reads that table alone (``latest_by_prefix``: one query for the whole fleet).  A metric over
time decodes the device's heartbeat rows in the time range (an index on device and time), and
older hours come from ``rollups`` (``metric_rollups``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from .base import (
    DeploymentResultInfo,
    DeviceInfo,
    LatestPoint,
    MetricPoint,
    ModelInfo,
    RollupPoint,
)
from .codec import decode_points
from .db import Db
from .retention import statistic
from .writes import HeartbeatWrites

__all__ = ["Reads"]

_HOUR = 3600
# the highest code point: a prefix range ends just below prefix + this
_TOP = "\U0010ffff"


class Reads(HeartbeatWrites):
    def devices(self, fleet: str | None = None) -> list[DeviceInfo]:
        """Every device (of ``fleet``), with its latest heartbeat time and agent version."""
        sql = (
            "SELECT name, fleet, deregistered_at IS NULL, registered_at, last_heartbeat, "
            "agent_version FROM devices "
        )
        args: tuple[Any, ...] = ()
        if fleet is not None:
            sql += "WHERE fleet = ? "
            args = (fleet,)
        with self._read() as db:
            rows = db.rows(sql + "ORDER BY fleet, name", args)
        return [DeviceInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows]

    def models(self, device: str) -> list[ModelInfo]:
        """The models ``device`` has reported, most recently reported first."""
        return self.models_by_device(device=device).get(device, [])

    def models_by_device(
        self, fleet: str | None = None, *, device: str | None = None
    ) -> dict[str, list[ModelInfo]]:
        """Every device's models (of ``fleet``, or of one ``device``) in one query."""
        sql = (
            "SELECT d.name, m.model_name, m.model_version, m.latest_sample_time, "
            "m.latest_inference, m.first_seen, m.last_seen FROM models m "
            "JOIN devices d ON d.id = m.device_id "
        )
        where, args = [], []
        if fleet is not None:
            where.append("d.fleet = ?")
            args.append(fleet)
        if device is not None:
            where.append("d.name = ?")
            args.append(device)
        if where:
            sql += "WHERE " + " AND ".join(where) + " "
        sql += "ORDER BY d.name, m.last_seen DESC, m.model_name, m.model_version"
        out: dict[str, list[ModelInfo]] = {}
        with self._read() as db:
            for r in db.rows(sql, args):
                out.setdefault(r[0], []).append(ModelInfo(*r[1:]))
        return out

    def _series_of(
        self, db: Db, device: str, model: str | None, metric: str, dimension: str | None
    ) -> tuple[int | None, float, dict[int, tuple[str, str]]]:
        """The device id, its ``max_span`` and ``{number: (dimension, version)}`` of a metric's
        series."""
        row = db.one("SELECT id, max_span FROM devices WHERE name = ?", (device,))
        if row is None:
            return None, 0.0, {}
        sql = (
            "SELECT number, dimension, version FROM series WHERE device_id = ? AND agent = ? "
            "AND model = ? AND metric = ?"
        )
        args: list[Any] = [row[0], int(model is None), model or "", metric]
        if dimension is not None:
            sql += " AND dimension = ?"
            args.append(dimension)
        return int(row[0]), float(row[1]), {int(r[0]): (r[1], r[2]) for r in db.rows(sql, args)}

    def metric_series(
        self,
        device: str,
        model: str | None,
        metric_name: str,
        since: float | None = None,
        until: float | None = None,
        dimension: str | None = None,
    ) -> list[MetricPoint]:
        """Raw values of one metric over time, oldest first; ``model=None`` means
        ``AgentMetrics``.  ``since``/``until`` bound the metric timestamp (inclusive);
        ``dimension`` filters on it ('' selects metrics sent without one).  Hours that retention
        rolled up are in ``metric_rollups``."""
        low, high = _range(since, until)
        with self._read() as db:
            device_id, span, wanted = self._series_of(db, device, model, metric_name, dimension)
            if device_id is None or not wanted:
                return []
            # a row's ts is its earliest point: one that starts up to max_span before ``since``
            # may still hold points inside the range
            rows = db.rows(
                "SELECT ts, points FROM heartbeats WHERE device_id = ? AND ts >= ? AND ts <= ? "
                "ORDER BY ts, number",
                (device_id, _bound(low - span), _bound(high)),
            )
        points: list[MetricPoint] = []
        for base, blob in rows:
            for number, value, ts in decode_points(bytes(blob), base, wanted):
                if low <= ts <= high:
                    dim, version = wanted[number]
                    points.append(MetricPoint(ts, value, dim, None if model is None else version))
        points.sort(key=lambda p: p.timestamp)
        return points

    def metric_rollups(
        self,
        device: str,
        model: str | None,
        metric_name: str,
        since: float | None = None,
        until: float | None = None,
        dimension: str | None = None,
    ) -> list[RollupPoint]:
        """Hourly aggregates of one metric that retention rolled up, oldest hour first (an hour
        is in range when its start is).  See ``RollupPoint`` for what is exact and what is an
        approximation."""
        low, high = _range(since, until)
        stat = statistic(metric_name)
        with self._read() as db:
            device_id, _, wanted = self._series_of(db, device, model, metric_name, dimension)
            if device_id is None or not wanted:
                return []
            rows = db.rows(
                "SELECT hour, number, points, total, minimum, maximum, weighted, weight "
                "FROM rollups WHERE device_id = ? AND hour >= ? AND hour <= ? "
                "ORDER BY hour, number",
                (device_id, _hour_bound(low, math.ceil), _hour_bound(high, math.floor)),
            )
        out = []
        for hour, number, n, total, low_v, high_v, weighted, weight in rows:
            if number not in wanted:
                continue
            dim, version = wanted[number]
            mean = weighted / weight if weight else (total / n if n else None)
            value = {"count": total, "sum": total, "min": low_v, "max": high_v}.get(stat, mean)
            out.append(
                RollupPoint(
                    hour=float(hour * _HOUR),
                    dimension=dim,
                    model_version=None if model is None else version,
                    statistic=stat,
                    points=int(n),
                    total=total,
                    minimum=low_v,
                    maximum=high_v,
                    weighted_mean=mean,
                    value=value,
                    exact=not (stat.startswith("p") and stat[1:].isdigit()),
                )
            )
        return out

    def metric_names(self, device: str, model: str, prefix: str = "") -> list[str]:
        """The distinct metric names of (device, model) that start with ``prefix``, in order."""
        with self._read() as db:
            rows = db.rows(
                "SELECT DISTINCT s.metric FROM series s JOIN devices d ON d.id = s.device_id "
                "WHERE d.name = ? AND s.agent = 0 AND s.model = ? AND s.metric >= ? "
                "AND s.metric < ? ORDER BY s.metric",
                (device, model, prefix, prefix + _TOP),
            )
        return [r[0] for r in rows]

    def latest_points(
        self, device: str, model: str, version: str, metric_name: str
    ) -> tuple[float | None, dict[str, float | None]]:
        """The newest timestamp of a metric of one model version, and its value per dimension
        at that timestamp; ``(None, {})`` when it was never reported."""
        with self._read() as db:
            rows = db.rows(
                "SELECT s.last_ts, s.dimension, s.last_value FROM series s "
                "JOIN devices d ON d.id = s.device_id WHERE d.name = ? AND s.agent = 0 "
                "AND s.model = ? AND s.metric = ? AND s.version = ? AND s.last_ts IS NOT NULL",
                (device, model, metric_name, version),
            )
        if not rows:
            return None, {}
        newest = max(r[0] for r in rows)
        return newest, {dim: value for ts, dim, value in rows if ts == newest}

    def latest_by_prefix(
        self, prefix: str, fleet: str | None = None, suffixes: Sequence[str] = ()
    ) -> list[LatestPoint]:
        """The newest point of every model series whose metric starts with ``prefix`` (and ends
        with one of ``suffixes``, when given), for the whole fleet (or one ``fleet``) in one
        query: what the fleet status shows."""
        sql = (
            "SELECT d.name, s.model, s.version, s.metric, s.dimension, s.last_ts, s.last_value "
            "FROM series s JOIN devices d ON d.id = s.device_id WHERE s.agent = 0 "
            "AND s.metric >= ? AND s.metric < ? AND s.last_ts IS NOT NULL"
        )
        args: list[Any] = [prefix, prefix + _TOP]
        by_length: dict[int, list[str]] = {}
        for suffix in suffixes:
            by_length.setdefault(len(suffix), []).append(suffix)
        if by_length:
            sql += " AND (" + " OR ".join(
                f"substr(s.metric, length(s.metric) - {n - 1}) IN ({', '.join('?' * len(e))})"
                for n, e in sorted(by_length.items())
            ) + ")"
            args += [e for _, ends in sorted(by_length.items()) for e in ends]
        if fleet is not None:
            sql += " AND d.fleet = ?"
            args.append(fleet)
        with self._read() as db:
            rows = db.rows(sql, args)
        return [LatestPoint(*r) for r in rows]

    def latest_agent_points(
        self, fleet: str | None = None, names: Sequence[str] = (), device: str | None = None
    ) -> list[LatestPoint]:
        """The newest value of AgentMetrics series (``model`` and ``version`` are empty): of the
        whole fleet (or one ``fleet``, or one ``device``), only ``names`` when given, in one
        query (``/metrics``, alerts, the fleet page)."""
        sql = (
            "SELECT d.name, s.model, s.version, s.metric, s.dimension, s.last_ts, s.last_value "
            "FROM series s JOIN devices d ON d.id = s.device_id WHERE s.agent = 1 "
            "AND s.last_ts IS NOT NULL"
        )
        args: list[Any] = []
        if fleet is not None:
            sql += " AND d.fleet = ?"
            args.append(fleet)
        if device is not None:
            sql += " AND d.name = ?"
            args.append(device)
        if names:
            sql += f" AND s.metric IN ({', '.join('?' * len(names))})"
            args += list(names)
        with self._read() as db:
            rows = db.rows(sql + " ORDER BY d.name, s.metric, s.dimension", args)
        return [LatestPoint(*r) for r in rows]

    def latest_deployment_results(
        self, fleet: str | None = None
    ) -> dict[str, DeploymentResultInfo]:
        """Each device's newest deployment result (device name -> result), in one query."""
        sql = (
            "SELECT d.name, r.received_at, r.deployment_name, r.deployment_status, "
            "r.status_message, r.start_time, r.end_time, r.models FROM deployment_results r "
            "JOIN devices d ON d.id = r.device_id WHERE r.id IN "
            "(SELECT max(id) FROM deployment_results GROUP BY device_id)"
        )
        args: list[Any] = []
        if fleet is not None:
            sql += " AND d.fleet = ?"
            args.append(fleet)
        with self._read() as db:
            rows = db.rows(sql, args)
        return {
            r[0]: DeploymentResultInfo(r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]))
            for r in rows
        }

    def heartbeat_count(self, device: str | None = None) -> int:
        """Heartbeats stored (for one device), whether still raw or rolled up since; resends
        that were recognised are not counted."""
        with self._read() as db:
            if device is None:
                row = db.one("SELECT coalesce(sum(heartbeats), 0) FROM devices")
            else:
                row = db.one("SELECT heartbeats FROM devices WHERE name = ?", (device,))
        return int(row[0]) if row else 0

    def deployment_results(self, device: str, limit: int = 100) -> list[DeploymentResultInfo]:
        """The deployment results ``device`` reported, newest first."""
        with self._read() as db:
            rows = db.rows(
                "SELECT r.received_at, r.deployment_name, r.deployment_status, r.status_message, "
                "r.start_time, r.end_time, r.models FROM deployment_results r "
                "JOIN devices d ON d.id = r.device_id WHERE d.name = ? "
                "ORDER BY r.id DESC LIMIT ?",
                (device, limit),
            )
        return [
            DeploymentResultInfo(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows
        ]


def _range(since: float | None, until: float | None) -> tuple[float, float]:
    return (-math.inf if since is None else since, math.inf if until is None else until)


def _bound(value: float) -> float:
    """A time bound both backends accept (PostgreSQL compares infinity fine; SQLite stores it
    as a REAL too), clamped so arithmetic on it stays finite."""
    return max(-1e300, min(1e300, value))


def _hour_bound(value: float, rounding: Any) -> int:
    if math.isinf(value):
        return -(2**62) if value < 0 else 2**62
    return int(rounding(value / _HOUR))
