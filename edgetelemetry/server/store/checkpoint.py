"""A SQLite store's WAL checkpoints, on a thread of their own.

Left to SQLite, the commit that fills the WAL past 1,000 pages copies them back into the
database file before it returns: one heartbeat in a few hundred waits tens to hundreds of
milliseconds, longer the more scattered the pages are (a long history).  Here a thread copies
the WAL back every second with a PASSIVE checkpoint, which never blocks the writer or the
readers, so commits only append to the WAL.  The writer's own automatic checkpoint stays as a
bound (``WAL_BOUND_PAGES``) in case this thread falls behind.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

__all__ = ["INTERVAL", "WAL_BOUND_PAGES", "Checkpointer"]

logger = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between checkpoints
WAL_BOUND_PAGES = 20000  # the writer checkpoints itself past this (80 MiB of 4 KiB pages)


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on ``path`` every ``interval`` seconds."""

    def __init__(self, path: str, busy_timeout_ms: int, interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        self._busy_timeout_ms = busy_timeout_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="edgetelemetry-wal-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute("PRAGMA synchronous = FULL")  # the copy is fsynced before the WAL resets
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the writer's own checkpoint still bounds the WAL
                    logger.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
