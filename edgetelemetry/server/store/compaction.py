"""Compaction, in any SQL backend (a mixin of ``SqlStore``): roll raw heartbeats past
``keep_raw`` up into ``rollups``, drop rollups and deployment results past ``keep_hourly``
(``retention.py`` says what an hour keeps).

A pass visits only the devices with work, a batch of at most ``_BATCH`` heartbeats per
transaction, so a writer waits a few milliseconds at most; it stops when its time budget is
spent and the next pass goes on from there.  Heartbeats are taken out of the table and merged in
one transaction, each by exactly one pass even when several processes compact at once
(``_take_raw``), and the highest resend sequence rolled up is kept per stream, so a resend of a
rolled-up heartbeat is still recognised.
"""

from __future__ import annotations

import math
import time

from .base import DEFAULT_KEEP_HOURLY, DEFAULT_KEEP_RAW, CompactionReport
from .db import Db
from .reads import Reads
from .retention import HOUR, aggregate, check_retention
from .sqlbase import device_series

__all__ = ["Compaction"]

_BATCH = 500  # heartbeats per transaction
_TABLES = ("devices", "series", "heartbeats", "rollups", "spool_streams", "models",
           "deployment_results")
_YIELD = 0.0  # between transactions: let a writer waiting for the lock go first


class Compaction(Reads):
    def compact(
        self,
        *,
        keep_raw: float = DEFAULT_KEEP_RAW,
        keep_hourly: float = DEFAULT_KEEP_HOURLY,
        budget: float | None = None,
        now: float | None = None,
    ) -> CompactionReport:
        """One compaction pass (``edgetelemetry store compact``, the server's compactor).

        Raw heartbeats whose time (the earliest metric ``Timestamp``) is older than
        ``keep_raw`` seconds, counted from the start of the hour, are merged into hourly
        rollups and removed; rollups and deployment results older than ``keep_hourly`` are
        removed.  ``budget`` bounds the pass in seconds (None: until done).
        """
        check_retention(keep_raw, keep_hourly)
        started = time.monotonic()
        now = self._clock() if now is None else now
        raw_cutoff = math.floor((now - keep_raw) / HOUR) * HOUR  # whole hours only
        hour_cutoff = math.floor((now - keep_hourly) / HOUR)
        deadline = None if budget is None else started + budget
        rolled = merged = dropped = results = visited = 0
        complete = True
        with self._read() as db:
            raw = _ids(db, "SELECT id FROM devices d WHERE EXISTS (SELECT 1 FROM heartbeats h "
                           "WHERE h.device_id = d.id AND h.ts < ?) ORDER BY id", raw_cutoff)
            old = _ids(db, "SELECT id FROM devices d WHERE EXISTS (SELECT 1 FROM rollups r "
                           "WHERE r.device_id = d.id AND r.hour < ?) OR EXISTS (SELECT 1 FROM "
                           "deployment_results x WHERE x.device_id = d.id AND x.received_at < ?) "
                           "ORDER BY id", hour_cutoff, hour_cutoff * HOUR)
        for device_id in sorted(set(raw) | set(old)):
            visited += 1
            while device_id in raw:
                if deadline is not None and time.monotonic() > deadline:
                    complete = False
                    break
                taken, rows = self._roll_up(device_id, raw_cutoff)
                rolled += taken
                merged += rows
                time.sleep(_YIELD)
                if taken < _BATCH:
                    break
            if not complete:
                break
            if device_id in old or device_id in raw:  # rolling up may have made old rows
                with self._write() as db:
                    dropped += db.run(
                        "DELETE FROM rollups WHERE device_id = ? AND hour < ?",
                        (device_id, hour_cutoff),
                    )
                    results += db.run(
                        "DELETE FROM deployment_results WHERE device_id = ? AND received_at < ?",
                        (device_id, hour_cutoff * HOUR),
                    )
            if deadline is not None and time.monotonic() > deadline:
                complete = False
                break
        return CompactionReport(
            heartbeats_rolled_up=rolled,
            rollup_rows_merged=merged,
            rollups_dropped=dropped,
            deployment_results_dropped=results,
            devices_visited=visited,
            complete=complete,
            seconds=time.monotonic() - started,
        )

    def table_rows(self) -> dict[str, int]:
        """Rows per table: what retention keeps bounded (``heartbeats``: raw, ``rollups``:
        hourly), and what grows with the fleet only (``devices``, ``series``...)."""
        with self._read() as db:
            return {
                table: int(db.one(f"SELECT count(*) FROM {table}")[0])  # type: ignore[index]
                for table in _TABLES
            }

    def _roll_up(self, device_id: int, cutoff: float) -> tuple[int, int]:
        """Roll up one batch of a device's heartbeats older than ``cutoff``: (heartbeats, rows)."""
        with self._write() as db:
            last = db.one(
                "SELECT ts, number FROM heartbeats WHERE device_id = ? AND ts < ? "
                "ORDER BY ts, number LIMIT 1 OFFSET ?",
                (device_id, cutoff, _BATCH - 1),
            )
            until = (float(last[0]), int(last[1])) if last else (cutoff, -1)
            # The device's resend streams locked first: a heartbeat with a resend key reads its
            # stream row FOR SHARE, so it waits for this transaction's commit and then sees
            # the new mark, and one that read it before has committed when the lock is granted.
            db.rows("SELECT id FROM spool_streams WHERE device_id = ? ORDER BY id"
                    + self.for_update, (device_id,))
            taken = self._take_raw(db, device_id, until)
            if not taken:
                return 0, 0
            # The marks from the rows taken, not from a read before the delete: on PostgreSQL
            # each statement has its own snapshot, and a heartbeat with an old time committed
            # in between was taken without its key in the mark (its resend was stored again).
            marks: dict[int, float] = {}
            for _, _, stream, seq, _ in taken:
                if stream is not None and seq is not None and seq > marks.get(stream, -math.inf):
                    marks[stream] = seq
            db.many(
                "UPDATE spool_streams SET compacted = CASE WHEN compacted IS NULL "
                "OR compacted < ? THEN ? ELSE compacted END WHERE id = ?",
                [(seq, seq, stream) for stream, seq in sorted(marks.items())],
            )
            series = device_series(db, device_id)
            hours = aggregate(((ts, bytes(blob)) for ts, _, _, _, blob in taken), series)
            db.many(
                "INSERT INTO rollups(device_id, hour, number, points, total, minimum, maximum, "
                "weighted, weight) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(device_id, hour, number) DO UPDATE SET "
                "points = rollups.points + excluded.points, "
                "total = rollups.total + excluded.total, "
                "minimum = CASE WHEN rollups.minimum IS NULL OR excluded.minimum < rollups.minimum "
                "THEN excluded.minimum ELSE rollups.minimum END, "
                "maximum = CASE WHEN rollups.maximum IS NULL OR excluded.maximum > rollups.maximum "
                "THEN excluded.maximum ELSE rollups.maximum END, "
                "weighted = rollups.weighted + excluded.weighted, "
                "weight = rollups.weight + excluded.weight",
                [
                    (device_id, hour, number, h.points, h.total, h.minimum, h.maximum,
                     h.weighted, h.weight)
                    for (hour, number), h in sorted(hours.items())
                ],
            )
        return len(taken), len(hours)


def _ids(db: Db, sql: str, *params: float) -> set[int]:
    return {int(r[0]) for r in db.rows(sql, params)}
