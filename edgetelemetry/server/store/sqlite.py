"""The endpoint's SQLite store (the default backend of ``base.FleetStore``): registrations,
deployment plans, heartbeats, models and metrics.

Durability: a file store runs in WAL mode with ``synchronous=FULL``, so a write transaction that
returned is on disk and survives a ``kill -9`` or a power cut; the server commits before it
answers 200.  Concurrency: connections come from a small pool (a connection is used by one thread
at a time), WAL lets readers run beside the writer, and writers of this process take one lock so
they never fight over SQLite's; other processes (``edgetelemetry register`` while serving) wait on
``busy_timeout``.  ``path=None`` keeps everything in memory on a single connection (tests, demos).

The schema (``PRAGMA user_version`` = ``SCHEMA_VERSION``) is in ``schema.py`` and in
``docs/endpoint.md``; ``readonly.open_read_only`` opens a store file for reading only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ...heartbeat import HeartbeatValidationError, validate_shape
from ...heartbeat.service import shape
from ..errors import RegistrationError
from .base import (
    DeploymentResultInfo,
    DeviceInfo,
    DeviceRefused,
    MetricPoint,
    ModelInfo,
    StoreError,
)
from .schema import SCHEMA, SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Store"]

logger = logging.getLogger(__name__)

_POOL_SIZE = 8
_BUSY_TIMEOUT_MS = 5000


def _check_name(shape_name: str, value: object, what: str) -> str:
    try:
        validate_shape(shape(shape_name), value, what)
    except HeartbeatValidationError as exc:
        raise RegistrationError(str(exc)) from None
    assert isinstance(value, str)
    return value


class Store:
    """SQLite-backed state of the endpoint; thread-safe; ``close()`` or use as a context manager."""

    def __init__(self, path: str | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._memory = path is None or path == ":memory:"
        self._max = 1 if self._memory else _POOL_SIZE
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all: list[sqlite3.Connection] = []
        self._slots = threading.BoundedSemaphore(self._max)
        self._open_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            ":memory:" if self._memory else self.path,  # type: ignore[arg-type]
            isolation_level=None,  # explicit BEGIN/COMMIT only
            check_same_thread=False,  # a pooled connection is used by one thread at a time
            timeout=_BUSY_TIMEOUT_MS / 1000,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"cannot put {self.path} in WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self.path} is not a usable SQLite database: {exc}") from None
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError("store is closed")
        self._slots.acquire()
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
                with self._open_lock:
                    self._all.append(conn)
            try:
                yield conn
            finally:
                if conn.in_transaction:  # an exception escaped mid-transaction
                    conn.rollback()
                self._idle.put(conn)
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (durably) when the block ends without an exception."""
        with self._write_lock, self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise StoreError(f"{self.path} is an SQLite file of another application")
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this edgetelemetry reads "
                    f"{SCHEMA_VERSION}"
                )

    def close(self) -> None:
        """Close every connection; the data is already committed."""
        if self._closed:
            return
        self._closed = True
        for _ in range(self._max):  # wait for borrowed connections to come back
            self._slots.acquire()
        with self._open_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registration ------------------------------------------------------------------------

    def register_fleet(self, name: str, description: str | None = None) -> None:
        """Create a device fleet (idempotent; a given description replaces the stored one)."""
        _check_name("DeviceFleetName", name, "fleet")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO fleets(name, description, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET description = "
                "coalesce(excluded.description, fleets.description)",
                (name, description, self._clock()),
            )

    def register_devices(self, fleet: str, names: Iterable[str]) -> None:
        """Register devices in an existing fleet (all or none).

        Re-registering a device in its fleet is a no-op (or undoes a deregistration); a device
        registered in another fleet must be deregistered first (``RegistrationError``).
        """
        _check_name("DeviceFleetName", fleet, "fleet")
        devices = [_check_name("DeviceName", n, "device") for n in names]
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM fleets WHERE name = ?", (fleet,)).fetchone() is None:
                raise RegistrationError(f"fleet {fleet!r} does not exist; register it first")
            for device in devices:
                self._register_device(conn, device, fleet, auto=False)

    def register_device(self, name: str, fleet: str) -> None:
        self.register_devices(fleet, [name])

    def _register_device(self, conn: sqlite3.Connection, name: str, fleet: str, auto: bool) -> None:
        row = conn.execute(
            "SELECT fleet, deregistered_at FROM devices WHERE name = ?", (name,)
        ).fetchone()
        now = self._clock()
        if row is None:
            conn.execute(
                "INSERT INTO devices(name, fleet, registered_at, auto_registered) VALUES (?,?,?,?)",
                (name, fleet, now, int(auto)),
            )
        elif row[1] is not None:  # deregistered: may come back, in any fleet
            conn.execute(
                "UPDATE devices SET fleet = ?, registered_at = ?, deregistered_at = NULL "
                "WHERE name = ?",
                (fleet, now, name),
            )
        elif row[0] != fleet:
            raise RegistrationError(
                f"device {name!r} is registered in fleet {row[0]!r}; deregister it before "
                f"registering it in {fleet!r}"
            )

    def deregister_devices(self, names: Iterable[str]) -> None:
        """Deregister devices: their history stays, their requests are refused from now on."""
        names = list(names)
        with self._write() as conn:
            for name in names:
                cur = conn.execute(
                    "UPDATE devices SET deregistered_at = ? WHERE name = ? AND "
                    "deregistered_at IS NULL",
                    (self._clock(), name),
                )
                if (
                    cur.rowcount == 0
                    and conn.execute("SELECT 1 FROM devices WHERE name = ?", (name,)).fetchone()
                    is None
                ):
                    raise RegistrationError(f"device {name!r} is not registered")

    def check_device(
        self,
        name: str,
        fleet: str,
        *,
        auto_register: bool = False,
        allow_deregistered: bool = True,
    ) -> str:
        """The registration status of ``name`` in ``fleet``: ``"REGISTERED"`` or ``"DEREGISTERED"``.

        Raises ``DeviceRefused`` when the device is unknown (unless ``auto_register``, which
        registers it and its fleet), registered in another fleet, or deregistered and
        ``allow_deregistered`` is false.
        """
        ctx = self._write() if auto_register else self._connection()
        with ctx as conn:
            return self._resolve(
                conn,
                name,
                fleet,
                auto_register=auto_register,
                allow_deregistered=allow_deregistered,
            )

    def _resolve(
        self,
        conn: sqlite3.Connection,
        name: str,
        fleet: str,
        *,
        auto_register: bool,
        allow_deregistered: bool,
    ) -> str:
        row = conn.execute(
            "SELECT fleet, deregistered_at FROM devices WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            if not auto_register:
                raise DeviceRefused(
                    "unregistered",
                    f"Device '{name}' is not registered in device fleet '{fleet}'. Register it "
                    "with the endpoint's registry before it calls the service.",
                )
            now = self._clock()
            conn.execute(
                "INSERT INTO fleets(name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                (fleet, now),
            )
            self._register_device(conn, name, fleet, auto=True)
            logger.info("auto-registered device %s in fleet %s", name, fleet)
            return "REGISTERED"
        if row[0] != fleet:
            raise DeviceRefused(
                "fleet",
                f"Device '{name}' is not registered in device fleet '{fleet}' (it belongs to "
                "another fleet).",
            )
        if row[1] is not None:
            if not allow_deregistered:
                raise DeviceRefused(
                    "deregistered", f"Device '{name}' was deregistered from device fleet '{fleet}'."
                )
            return "DEREGISTERED"
        return "REGISTERED"

    # -- deployments -------------------------------------------------------------------------

    def put_deployment(
        self,
        deployment: Mapping[str, Any],
        *,
        fleets: Sequence[str] = (),
        devices: Sequence[str] = (),
    ) -> None:
        """Store (or replace) an ``EdgeDeployment`` and the fleets/devices it targets.

        ``deployment`` is the botocore ``EdgeDeployment`` shape (``DeploymentName``, ``Type``,
        ``FailureHandlingPolicy``, ``Definitions``), checked against the model; ``GetDeployments``
        serves it as given to every targeted device.  Replacing a deployment replaces its targets.
        """
        try:
            validate_shape(shape("EdgeDeployment"), dict(deployment), "deployment")
        except HeartbeatValidationError as exc:
            raise RegistrationError(str(exc)) from None
        name = deployment.get("DeploymentName")
        if not name:
            raise RegistrationError("deployment.DeploymentName is required")
        for f in fleets:
            _check_name("DeviceFleetName", f, "fleet")
        for d in devices:
            _check_name("DeviceName", d, "device")
        if not fleets and not devices:
            raise RegistrationError(f"deployment {name!r} targets no fleet and no device")
        now = self._clock()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO deployments(name, definition, created_at, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "definition = excluded.definition, updated_at = excluded.updated_at",
                (name, json.dumps(dict(deployment), sort_keys=True), now, now),
            )
            conn.execute("DELETE FROM deployment_targets WHERE deployment = ?", (name,))
            conn.executemany(
                "INSERT OR IGNORE INTO deployment_targets(kind, target, deployment) VALUES (?,?,?)",
                [("fleet", f, name) for f in fleets] + [("device", d, name) for d in devices],
            )

    def remove_deployment(self, name: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM deployments WHERE name = ?", (name,))

    def deployments_for(self, device: str, fleet: str) -> list[dict[str, Any]]:
        """The ``EdgeDeployment`` objects targeting the device or its fleet, by name."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT d.name, d.definition FROM deployments d "
                "JOIN deployment_targets t ON t.deployment = d.name "
                "WHERE (t.kind = 'device' AND t.target = ?) OR (t.kind = 'fleet' AND t.target = ?) "
                "ORDER BY d.name",
                (device, fleet),
            ).fetchall()
        return [json.loads(definition) for _, definition in rows]

    # -- heartbeats --------------------------------------------------------------------------

    def record_heartbeat(
        self,
        request: Mapping[str, Any],
        *,
        access_key_id: str | None = None,
        auto_register: bool = False,
        received_at: float | None = None,
    ) -> int:
        """Store one validated ``SendHeartbeat`` request (JSON-decoded) and commit; return its id.

        Raises ``DeviceRefused`` (nothing stored) when the device may not send.
        """
        now = self._clock() if received_at is None else received_at
        device = request["DeviceName"]
        fleet = request["DeviceFleetName"]
        with self._write() as conn:
            self._resolve(
                conn, device, fleet, auto_register=auto_register, allow_deregistered=False
            )
            heartbeat_id = conn.execute(
                "INSERT INTO heartbeats(device, fleet, received_at, agent_version, access_key_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (device, fleet, now, request["AgentVersion"], access_key_id),
            ).lastrowid
            assert heartbeat_id is not None
            rows: list[tuple[Any, ...]] = []
            for metric in request.get("AgentMetrics") or ():
                rows.append(_metric_row(heartbeat_id, device, None, None, metric, now))
            for model in request.get("Models") or ():
                name = model.get("ModelName") or ""
                version = model.get("ModelVersion") or ""
                conn.execute(
                    "INSERT INTO models(device, model_name, model_version, first_seen, last_seen, "
                    "latest_sample_time, latest_inference) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(device, model_name, model_version) DO UPDATE SET "
                    "last_seen = excluded.last_seen, "
                    "latest_sample_time = coalesce(excluded.latest_sample_time, "
                    "models.latest_sample_time), "
                    "latest_inference = coalesce(excluded.latest_inference, "
                    "models.latest_inference)",
                    (
                        device,
                        name,
                        version,
                        now,
                        now,
                        _num(model.get("LatestSampleTime")),
                        _num(model.get("LatestInference")),
                    ),
                )
                for metric in model.get("ModelMetrics") or ():
                    rows.append(_metric_row(heartbeat_id, device, name, version, metric, now))
            conn.executemany(
                "INSERT INTO metrics(heartbeat_id, device, model_name, model_version, "
                "metric_name, dimension, value, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            result = request.get("DeploymentResult")
            if result:
                conn.execute(
                    "INSERT INTO deployment_results(heartbeat_id, device, deployment_name, "
                    "deployment_status, status_message, start_time, end_time, models) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        heartbeat_id,
                        device,
                        result.get("DeploymentName"),
                        result.get("DeploymentStatus"),
                        result.get("DeploymentStatusMessage"),
                        _num(result.get("DeploymentStartTime")),
                        _num(result.get("DeploymentEndTime")),
                        json.dumps(result.get("DeploymentModels") or []),
                    ),
                )
        return heartbeat_id

    # -- queries for the fleet view ----------------------------------------------------------

    def devices(self, fleet: str | None = None) -> list[DeviceInfo]:
        """Every device (of ``fleet``), with its latest heartbeat time and agent version."""
        sql = (
            "SELECT d.name, d.fleet, d.deregistered_at IS NULL, d.registered_at, "
            "h.received_at, h.agent_version FROM devices d "
            "LEFT JOIN heartbeats h ON h.id = (SELECT id FROM heartbeats "
            "WHERE device = d.name ORDER BY received_at DESC, id DESC LIMIT 1) "
        )
        args: tuple[Any, ...] = ()
        if fleet is not None:
            sql += "WHERE d.fleet = ? "
            args = (fleet,)
        sql += "ORDER BY d.fleet, d.name"
        with self._connection() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [DeviceInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows]

    def models(self, device: str) -> list[ModelInfo]:
        """The models ``device`` has reported, most recently reported first."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT model_name, model_version, latest_sample_time, latest_inference, "
                "first_seen, last_seen FROM models WHERE device = ? "
                "ORDER BY last_seen DESC, model_name, model_version",
                (device,),
            ).fetchall()
        return [ModelInfo(*r) for r in rows]

    def metric_series(
        self,
        device: str,
        model: str | None,
        metric_name: str,
        since: float | None = None,
        until: float | None = None,
        dimension: str | None = None,
    ) -> list[MetricPoint]:
        """Values of one metric over time, oldest first; ``model=None`` means ``AgentMetrics``.

        ``since``/``until`` bound the metric timestamp (inclusive); ``dimension`` filters on it
        ('' selects metrics sent without one).
        """
        sql = (
            "SELECT ts, value, dimension, model_version FROM metrics "
            "WHERE device = ? AND model_name IS ? AND metric_name = ? AND ts >= ? AND ts <= ?"
        )
        args: list[Any] = [
            device,
            model,
            metric_name,
            float("-inf") if since is None else since,
            float("inf") if until is None else until,
        ]
        if dimension is not None:
            sql += " AND dimension = ?"
            args.append(dimension)
        sql += " ORDER BY ts"
        with self._connection() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [MetricPoint(*r) for r in rows]

    def metric_names(self, device: str, model: str, prefix: str = "") -> list[str]:
        """The distinct metric names of (device, model) that start with ``prefix``, in order.

        A loose index scan over ``metrics_series (device, model_name, metric_name, ts)``: one
        index seek per distinct name, whatever the number of points.
        """
        high = prefix + "\U0010ffff"
        sql = (
            "WITH RECURSIVE names(n) AS ("
            " SELECT (SELECT min(metric_name) FROM metrics WHERE device = :d AND model_name = :m"
            "         AND metric_name >= :lo AND metric_name < :hi)"
            " UNION ALL"
            " SELECT (SELECT min(metric_name) FROM metrics WHERE device = :d AND model_name = :m"
            "         AND metric_name > names.n AND metric_name < :hi)"
            " FROM names WHERE names.n IS NOT NULL"
            ") SELECT n FROM names WHERE n IS NOT NULL"
        )
        with self._connection() as conn:
            rows = conn.execute(sql, {"d": device, "m": model, "lo": prefix, "hi": high}).fetchall()
        return [r[0] for r in rows]

    def latest_points(
        self, device: str, model: str, version: str, metric_name: str
    ) -> tuple[float | None, dict[str, float | None]]:
        """The newest timestamp of a metric of one model version, and its value per dimension
        at that timestamp; ``(None, {})`` when it was never reported."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT ts, dimension, value FROM metrics WHERE device = :d AND model_name = :m "
                "AND metric_name = :n AND model_version = :v AND ts = ("
                " SELECT ts FROM metrics WHERE device = :d AND model_name = :m AND metric_name = :n"
                " AND model_version = :v ORDER BY ts DESC LIMIT 1)",
                {"d": device, "m": model, "n": metric_name, "v": version},
            ).fetchall()
        if not rows:
            return None, {}
        return rows[0][0], {dimension: value for _, dimension, value in rows}

    def heartbeat_count(self, device: str | None = None) -> int:
        with self._connection() as conn:
            if device is None:
                return int(conn.execute("SELECT count(*) FROM heartbeats").fetchone()[0])
            return int(
                conn.execute(
                    "SELECT count(*) FROM heartbeats WHERE device = ?", (device,)
                ).fetchone()[0]
            )

    def deployment_results(self, device: str, limit: int = 100) -> list[DeploymentResultInfo]:
        """The deployment results ``device`` reported, newest first."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT h.received_at, r.deployment_name, r.deployment_status, r.status_message, "
                "r.start_time, r.end_time, r.models FROM deployment_results r "
                "JOIN heartbeats h ON h.id = r.heartbeat_id WHERE r.device = ? "
                "ORDER BY r.id DESC LIMIT ?",
                (device, limit),
            ).fetchall()
        return [
            DeploymentResultInfo(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows
        ]


def _metric_row(
    heartbeat_id: int,
    device: str,
    model: str | None,
    version: str | None,
    metric: Mapping[str, Any],
    now: float,
) -> tuple[Any, ...]:
    ts = _num(metric.get("Timestamp"))
    return (
        heartbeat_id,
        device,
        model,
        version,
        metric.get("MetricName") or "",
        metric.get("Dimension") or "",
        _num(metric.get("Value")),
        now if ts is None else ts,
    )


def _num(value: Any) -> float | None:
    """A JSON number (or a datetime) as a float, or None; SQLite refuses ints beyond 64 bits."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float(value)
