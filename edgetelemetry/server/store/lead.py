"""Leads: a named role that one process of those sharing a store holds at a time (the alert
evaluator's sender, so an alert is sent once however many replicas or workers run).

- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) on a connection of the lead's
  own, outside the pool.  It is released when that connection ends: ``close()``, or the process
  dying (the server notices the dropped session), so another process takes the lead at its
  next try.
- SQLite file: an exclusive ``flock`` on ``<store>.lead-<name>`` (a private file beside the
  store), released by the kernel when the process ends.  Processes sharing a SQLite file share a
  host, so the lock reaches them all.
- SQLite in memory: no one else can share it; this process always leads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from typing import Any

__all__ = ["FileLeads", "PgLeads"]


def _key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(
        hashlib.sha256(b"edgetelemetry-lead:" + name.encode()).digest()[:8], "big", signed=True
    )


class PgLeads:
    def __init__(self, url: str, settings: dict[str, Any]) -> None:
        self._url = url
        self._settings = settings
        self._held: dict[str, Any] = {}
        self._lock = threading.Lock()

    def hold(self, name: str) -> bool:
        import psycopg

        with self._lock:
            conn = self._held.get(name)
            if conn is not None:
                try:
                    conn.execute("SELECT 1")
                    return True
                except psycopg.Error:  # the session ended: so did the lock
                    self._held.pop(name)
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
            try:
                conn = psycopg.connect(self._url, **self._settings)
            except psycopg.Error:
                return False
            try:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_key(name),)).fetchone()
            except psycopg.Error:
                row = None
            if row and row[0]:
                self._held[name] = conn
                return True
            with contextlib.suppress(psycopg.Error):
                conn.close()
            return False

    def close(self) -> None:
        with self._lock:
            for conn in self._held.values():
                with contextlib.suppress(Exception):
                    conn.close()
            self._held.clear()


class FileLeads:
    def __init__(self, path: str | None) -> None:
        self._path = path  # None: in memory, always the lead
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def hold(self, name: str) -> bool:
        if self._path is None:
            return True
        with self._lock:
            if name in self._held:
                return True
            fd = os.open(f"{self._path}.lead-{name}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._held[name] = fd
            return True

    def close(self) -> None:
        with self._lock:
            for fd in self._held.values():
                os.close(fd)
            self._held.clear()
