"""What both SQL backends share: the connection-free statement interface (``Db``), the store's
life cycle (open, migrate, close), and the device-local numbering of series.

Statements are written once, with ``?`` placeholders and the SQL both SQLite and PostgreSQL
accept (``ON CONFLICT``, row values, ``CASE`` instead of ``max()``/``greatest()``); a backend's
``Db`` adapts the placeholders.  What truly differs is a small set of hooks on the backend class.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .base import SchemaOutOfDate, StoreError
from .db import Db
from .migrations import SCHEMA_VERSION, Step
from .request import SeriesKey

# a series' newest point: a late heartbeat (older metric time) leaves it as it is
UPDATE_LATEST = (
    "UPDATE series SET last_ts = ?, last_value = ? WHERE device_id = ? AND number = ? "
    "AND (last_ts IS NULL OR last_ts <= ?)"
)

__all__ = ["SqlStore", "device_series"]

_S = TypeVar("_S", bound="SqlStore")

# series numbers kept in memory (key -> number); series are never renumbered, so an entry is
# valid for ever and the cache only bounds memory
_SERIES_CACHE_MAX = 500_000


def device_series(db: Db, device_id: int) -> dict[int, SeriesKey]:
    """``{number: series key}`` of every series of a device."""
    return {
        int(r[0]): (int(r[1]), r[2], r[3], r[4], r[5])
        for r in db.rows(
            "SELECT number, agent, model, version, metric, dimension FROM series "
            "WHERE device_id = ?",
            (device_id,),
        )
    }


class SqlStore(abc.ABC):
    """The life cycle and helpers of a SQL store; the operations are in the mixins beside it."""

    path: str | None
    # " FOR SHARE" where the backend locks rows that a concurrent compaction may change
    for_share = ""
    # " FOR NO KEY UPDATE" where a compaction locks those rows against heartbeat writers
    for_update = ""
    # the engine runs UPDATE ... RETURNING (writes.py falls back to an update and a read)
    update_returning = True

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._series: dict[tuple[int, SeriesKey], int] = {}
        self._series_lock = threading.Lock()
        self._keys: dict[str, int] = {}
        # device name -> id and (device id, resend stream dimension) -> stream id, as committed:
        # devices and streams are never deleted nor renamed, and a statement that uses an id
        # checks the name beside it, so an entry can only be missing, never wrong
        self._device_ids: dict[str, int] = {}
        self._stream_ids: dict[tuple[int, str], int] = {}
        self._closed = False
        # the migration steps this store applied when it was opened (``migrate=True``)
        self.migrations_applied: list[tuple[int, str]] = []

    # -- what a backend provides ---------------------------------------------------------------

    @abc.abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Db]:
        """A connection for reading."""

    @abc.abstractmethod
    def _write(self) -> contextlib.AbstractContextManager[Db]:
        """One write transaction, committed (durably) when the block ends without an exception."""

    @abc.abstractmethod
    def _steps(self) -> Sequence[Step]:
        """The backend's migration steps, oldest first."""

    @abc.abstractmethod
    def _schema_version(self, db: Db) -> int:
        """The schema version of the database (0: empty); ``StoreError`` if it is not a store."""

    @abc.abstractmethod
    def _lock_schema(self, db: Db) -> None:
        """Hold off other processes migrating the same database until the transaction ends."""

    @abc.abstractmethod
    def hold_lead(self, name: str) -> bool:
        """Whether this process holds the lead ``name`` among those sharing the store, taking it
        when it is free (``lead.py``)."""

    @abc.abstractmethod
    def _take_raw(
        self, db: Db, device_id: int, until: tuple[float, int]
    ) -> list[tuple[float, int, int | None, float | None, bytes]]:
        """Remove the device's heartbeats up to ``(ts, number)`` inclusive and return them as
        ``(ts, number, stream_id, seq, points)``, each once whatever runs beside."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- life cycle ----------------------------------------------------------------------------

    def _open_schema(self, migrate: bool) -> None:
        """Create a new store, check an existing one, and migrate it when asked."""
        with self._write() as db:
            version = self._schema_version(db)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this edgetelemetry "
                f"knows ({SCHEMA_VERSION}): it was written by a newer edgetelemetry; upgrade "
                "edgetelemetry to use it"
            )
        if version == SCHEMA_VERSION:
            return
        if version > 0 and not migrate:
            raise SchemaOutOfDate(
                f"{self.path} has schema version {version}; this edgetelemetry needs "
                f"{SCHEMA_VERSION}. Back it up, then run 'edgetelemetry store migrate --store "
                f"{self.path}' (or start 'edgetelemetry serve' with --migrate)"
            )
        self.migrations_applied = self.migrate()

    def schema_version(self) -> int:
        with self._write() as db:
            return self._schema_version(db)

    def migrate(self) -> list[tuple[int, str]]:
        """Apply the migration steps the database lacks, each in its own transaction; return
        ``(version, description)`` of each step applied (none when it is up to date)."""
        applied: list[tuple[int, str]] = []
        for step in self._steps():
            with self._write() as db:
                self._lock_schema(db)
                version = self._schema_version(db)
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.path} has schema version {version}, newer than "
                                     f"this edgetelemetry knows ({SCHEMA_VERSION})")
                if version >= step.version:
                    continue
                step.apply(db, self._clock())
                db.run(
                    "INSERT INTO schema_version(version, applied_at, description) "
                    "VALUES (?, ?, ?)",
                    (step.version, time.time(), step.description),
                )
                self._after_step(db, step.version)
            applied.append((step.version, step.description))
        return applied

    @abc.abstractmethod
    def _after_step(self, db: Db, version: int) -> None:
        """A backend's own record of the version beside ``schema_version``, if any."""

    # -- statements a backend may do in fewer round trips ---------------------------------

    def _update_latest(self, db: Db, rows: list[tuple[Any, ...]]) -> None:
        """``UPDATE_LATEST`` (writes.py) for every row."""
        db.many(UPDATE_LATEST, rows)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _check_writable(self, read_only: bool) -> None:
        if read_only:
            raise StoreError(f"{self.path} is open read-only")

    def _check_current(self) -> None:
        """A store opened read-only must be at this version's schema (nothing migrates it)."""
        with self._read() as db:
            version = self._schema_version(db)
        if version == SCHEMA_VERSION:
            return
        advice = (
            " (not an endpoint store?)" if version == 0
            else f": run 'edgetelemetry store migrate --store {self.path}'"
            if version < SCHEMA_VERSION else " (written by a newer edgetelemetry)"
        )
        raise StoreError(
            f"{self.path} has schema version {version}; this edgetelemetry reads "
            f"{SCHEMA_VERSION}{advice}"
        )

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """Raise ``StoreError`` unless the database answers."""
        with self._read() as db:
            db.one("SELECT 1")

    # -- numbering -----------------------------------------------------------------------------

    def _series_numbers(
        self, db: Db, device_id: int, keys: Iterable[SeriesKey]
    ) -> tuple[dict[SeriesKey, int], dict[tuple[int, SeriesKey], int]]:
        """The device-local number of each series, creating the missing ones in ``db``'s
        transaction.  Returns the numbers and the entries to cache once the transaction commits
        (a rolled-back series must not stay cached)."""
        numbers: dict[SeriesKey, int] = {}
        missing: list[SeriesKey] = []
        with self._series_lock:
            for key in keys:
                number = self._series.get((device_id, key))
                if number is None:
                    missing.append(key)
                else:
                    numbers[key] = number
        if not missing:
            return numbers, {}
        known = {key: number for number, key in device_series(db, device_id).items()}
        new = [k for k in dict.fromkeys(missing) if k not in known]
        if new:
            # the device row is locked by the heartbeat's update, so numbers are not handed out
            # twice; a series another process created meanwhile conflicts and is read back
            row = db.one("SELECT series FROM devices WHERE id = ?", (device_id,))
            assert row is not None
            first = int(row[0]) + 1
            db.many(
                "INSERT INTO series(device_id, number, agent, model, version, metric, dimension) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(device_id, first + i, *k) for i, k in enumerate(new)],
            )
            db.run("UPDATE devices SET series = ? WHERE id = ?", (first + len(new) - 1, device_id))
            known = {key: number for number, key in device_series(db, device_id).items()}
        fresh = {(device_id, k): int(v) for k, v in known.items()}
        for key in missing:
            numbers[key] = fresh[(device_id, key)]
        return numbers, fresh

    def _remember_series(self, entries: dict[tuple[int, SeriesKey], int]) -> None:
        if not entries:
            return
        with self._series_lock:
            if len(self._series) + len(entries) > _SERIES_CACHE_MAX:
                self._series.clear()
            self._series.update(entries)

    def _remember_ids(self, device: str, device_id: int, stream: tuple[str, int] | None) -> None:
        """A committed device id (and resend stream id) for ``_record_known``."""
        with self._series_lock:
            if len(self._device_ids) >= _SERIES_CACHE_MAX:
                self._device_ids.clear()
            self._device_ids[device] = device_id
            if stream is not None:
                if len(self._stream_ids) >= _SERIES_CACHE_MAX:
                    self._stream_ids.clear()
                self._stream_ids[(device_id, stream[0])] = stream[1]

    def _key_id(self, db: Db, access_key_id: str | None) -> int | None:
        """The number of an access key id (kept once in ``access_keys``)."""
        if access_key_id is None:
            return None
        cached = self._keys.get(access_key_id)
        if cached is not None:
            return cached
        row = db.one("SELECT id FROM access_keys WHERE name = ?", (access_key_id,))
        if row is not None:  # committed: safe to remember
            self._keys[access_key_id] = int(row[0])
            return int(row[0])
        db.run(
            "INSERT INTO access_keys(name) VALUES (?) ON CONFLICT DO NOTHING", (access_key_id,)
        )
        row = db.one("SELECT id FROM access_keys WHERE name = ?", (access_key_id,))
        assert row is not None
        return int(row[0])

    def _device_id(self, db: Db, name: str) -> int | None:
        row = db.one("SELECT id FROM devices WHERE name = ?", (name,))
        return None if row is None else int(row[0])
