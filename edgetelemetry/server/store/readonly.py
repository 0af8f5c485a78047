"""A store file opened for reading only (``mode=ro``: never created, migrated or written), so
``edgetelemetry fleet status`` reads it while ``edgetelemetry serve`` writes it: the store is in
WAL mode and readers never block the writer."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from .base import StoreError
from .schema import SCHEMA_VERSION
from .sqlite import Store

__all__ = ["open_read_only"]


class _ReadOnlyStore(Store):
    """A ``Store`` on an existing file, opened ``mode=ro``: never created, migrated or written."""

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path} read-only: {exc}") from None
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _init_schema(self) -> None:
        try:
            with self._connection() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite database: {exc}") from None
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this edgetelemetry reads "
                f"{SCHEMA_VERSION}" + (" (not an endpoint store?)" if version == 0 else "")
            )


def open_read_only(path: str | os.PathLike[str]) -> Store:
    """Open an endpoint store file for reading only; ``StoreError`` if it is missing or foreign.

    The returned ``Store`` answers the query helpers (``devices()``, ``models()``,
    ``metric_series()``...); its write methods fail.  Close it (or use ``with``).
    """
    name = os.fspath(path)
    if name in ("", ":memory:"):
        raise StoreError("a read-only store needs a file")
    if not os.path.isfile(name):
        raise StoreError(f"no store at {name}")
    return _ReadOnlyStore(name)
