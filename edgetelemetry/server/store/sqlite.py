"""The endpoint's SQLite store (the default backend of ``base.FleetStore``): one file, nothing
to install.

Durability: a file store runs in WAL mode with ``synchronous=FULL``, so a write transaction that
returned is on disk and survives a ``kill -9`` or a power cut; the server commits before it
answers 200.  Concurrency: the writes of this process go through one connection (with a cache
large enough to hold the pages every device writes to) under one lock, and ``BEGIN IMMEDIATE``
keeps other processes (``edgetelemetry register``, a second ``serve``) in turn, waiting on
``busy_timeout``; readers come from a small pool and, with WAL, run beside the writer.
``path=None`` keeps everything in memory on a single connection (tests, demos).

The schema and its migrations are in ``migrations/sqlite.py`` and ``docs/store.md``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .base import StoreError
from .checkpoint import WAL_BOUND_PAGES, Checkpointer
from .compaction import Compaction
from .db import Db
from .lead import FileLeads
from .migrations import SCHEMA_VERSION, Step
from .migrations.sqlite import STEPS, schema_version

__all__ = ["SCHEMA_VERSION", "Store"]

_POOL_SIZE = 8
_BUSY_TIMEOUT_MS = 10000
# KiB of page cache for the writing connection: the pages a heartbeat of each of 10,000 devices
# touches stay in memory, so a write costs the same with a long history as with a short one
_WRITER_CACHE_KIB = 131072


class _SqliteDb:
    """``Db`` over one sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        return row

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, params)

    def script(self, sql: str) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                self.conn.execute(statement)


class Store(Compaction):
    """SQLite-backed state of the endpoint; thread-safe; ``close()`` or use as a context manager.

    ``migrate``: upgrade a store written by an older edgetelemetry (otherwise ``SchemaOutOfDate``
    says how); a new or empty file is always given the current schema.
    """

    update_returning = sqlite3.sqlite_version_info >= (3, 35, 0)

    def __init__(
        self,
        path: str | None,
        clock: Callable[[], float] = time.time,
        *,
        migrate: bool = False,
        read_only: bool = False,
    ) -> None:
        super().__init__(clock)
        self.path = path
        self._memory = path is None or path == ":memory:"
        self._read_only = read_only
        self._max = 1 if self._memory else _POOL_SIZE
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all: list[sqlite3.Connection] = []
        self._slots = threading.BoundedSemaphore(self._max)
        self._open_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._leads = FileLeads(None if self._memory else str(path))
        try:
            if read_only:
                self._check_current()
            else:
                self._open_schema(migrate)
        except BaseException:
            self.close()
            raise

    # -- connections -------------------------------------------------------------------------

    def _connect(self, writer: bool = False) -> sqlite3.Connection:
        try:
            conn = self._open_connection()
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if self._read_only:
                conn.execute("PRAGMA query_only = ON")
                return conn
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"cannot put {self.path} in WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            if writer:
                conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
                if not self._memory:  # checkpoints run on their own thread (checkpoint.py)
                    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_BOUND_PAGES}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite database: {exc}") from None
        return conn

    def _open_connection(self) -> sqlite3.Connection:
        target = ":memory:" if self._memory else str(self.path)
        if self._read_only:  # never created, migrated or written
            target = "file:" + urllib.parse.quote(os.path.abspath(target)) + "?mode=ro"
        try:
            return sqlite3.connect(
                target,
                uri=self._read_only,
                isolation_level=None,  # explicit BEGIN/COMMIT only
                check_same_thread=False,  # a connection is used by one thread at a time
                timeout=_BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection (the only one, in memory)."""
        self._check_open()
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
    def _read(self) -> Iterator[Db]:
        with self._connection() as conn:
            yield _SqliteDb(conn)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Db]:
        """One write transaction, committed (durably) when the block ends without an exception."""
        self._check_writable(self._read_only)
        with self._write_lock, self._writing() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"{self.path}: cannot start a write: {exc}") from None
            try:
                yield _SqliteDb(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        if self._memory:  # one connection for everything
            with self._connection() as conn:
                yield conn
            return
        self._check_open()
        if self._writer is None:
            self._writer = self._connect(writer=True)
            self._checkpointer = Checkpointer(str(self.path), _BUSY_TIMEOUT_MS)
        yield self._writer

    # -- schema --------------------------------------------------------------------------------

    def _steps(self) -> Sequence[Step]:
        return STEPS

    def _schema_version(self, db: Db) -> int:
        try:
            return schema_version(db)
        except ValueError:
            raise StoreError(f"{self.path} is an SQLite file of another application") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite database: {exc}") from None

    def _lock_schema(self, db: Db) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the file's write lock."""

    def _after_step(self, db: Db, version: int) -> None:
        # what edgetelemetry 0.1 reads: it refuses a file whose user_version is not 1
        db.run(f"PRAGMA user_version = {int(version)}")

    def _take_raw(
        self, db: Db, device_id: int, until: tuple[float, int]
    ) -> list[tuple[float, int, int | None, float | None, bytes]]:
        # the write transaction holds the file's write lock: nothing changes between the two
        where = "WHERE device_id = ? AND (ts, number) <= (?, ?)"
        rows = db.rows(
            f"SELECT ts, number, stream_id, seq, points FROM heartbeats {where} "
            "ORDER BY ts, number",
            (device_id, *until),
        )
        db.run(f"DELETE FROM heartbeats {where}", (device_id, *until))
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    # -- upkeep --------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it (sizes measured after this are honest)."""
        with self._write_lock, self._writing() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def hold_lead(self, name: str) -> bool:
        """Whether this process holds the lead ``name`` among all sharing the file, taking it
        when it is free (``lead.FileLeads``: a ``flock`` beside the store)."""
        return self._leads.hold(name)

    def close(self) -> None:
        """Close every connection; the data is already committed."""
        if self._closed:
            return
        self._closed = True
        self._leads.close()
        for _ in range(self._max):  # wait for borrowed connections to come back
            self._slots.acquire()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._open_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
