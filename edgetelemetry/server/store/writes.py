"""Storing a heartbeat, in any SQL backend (a mixin of ``SqlStore``), and the statements the
schema-1 conversion shares with it.

One heartbeat is one transaction: the device row (counters, latest heartbeat), any series seen
for the first time, the heartbeat row with its points encoded, the latest value of each series,
the models it lists and its deployment result.  A request with a resend key already stored
(``request.py``) writes nothing and returns False.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .codec import encode_points
from .db import Db
from .registration import Registration
from .request import Heartbeat, SeriesKey, parse_heartbeat
from .sqlbase import UPDATE_LATEST

__all__ = [
    "COUNT_HEARTBEAT",
    "INSERT_HEARTBEAT",
    "UPDATE_LATEST",
    "UPSERT_MODEL",
    "HeartbeatWrites",
    "Resend",
    "latest_rows",
    "points_blob",
]

INSERT_HEARTBEAT = (
    "INSERT INTO heartbeats(device_id, ts, number, received_at, agent_version, key_id, "
    "stream_id, seq, points) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

# the device row of a heartbeat: counted, its latest heartbeat and agent version kept (a late
# heartbeat leaves them), its widest span kept; completed by a WHERE clause and RETURNING
COUNT_HEARTBEAT = (
    "UPDATE devices SET heartbeats = heartbeats + 1, "
    "max_span = CASE WHEN max_span < ? THEN ? ELSE max_span END, "
    "agent_version = CASE WHEN last_heartbeat IS NULL OR last_heartbeat <= ? "
    "THEN ? ELSE agent_version END, "
    "last_heartbeat = CASE WHEN last_heartbeat IS NULL OR last_heartbeat <= ? "
    "THEN ? ELSE last_heartbeat END "
)


# a model row seen again: its last_seen moves on, and a heartbeat that does not name its latest
# sample or inference time keeps the stored one (the tail of both back ends' INSERT INTO models)
UPSERT_MODEL = (
    "ON CONFLICT(device_id, model_name, model_version) DO UPDATE SET "
    "last_seen = excluded.last_seen, "
    "latest_sample_time = coalesce(excluded.latest_sample_time, models.latest_sample_time), "
    "latest_inference = coalesce(excluded.latest_inference, models.latest_inference)"
)


def points_blob(hb: Heartbeat, numbers: Mapping[SeriesKey, int]) -> bytes:
    return encode_points([(numbers[key], value, ts) for key, value, ts in hb.points], hb.ts)


def latest_rows(
    device_id: int, hb: Heartbeat, numbers: Mapping[SeriesKey, int]
) -> list[tuple[Any, ...]]:
    """``UPDATE_LATEST`` parameters: each series' newest point in this heartbeat."""
    newest: dict[int, tuple[float, float | None]] = {}
    for key, value, ts in hb.points:
        number = numbers[key]
        seen = newest.get(number)
        if seen is None or ts >= seen[0]:
            newest[number] = (ts, value)
    return [(ts, value, device_id, n, ts) for n, (ts, value) in sorted(newest.items())]


class Resend(Exception):
    """Raised inside the write transaction to roll it back: the heartbeat is already stored."""


class HeartbeatWrites(Registration):
    def record_heartbeat(
        self,
        request: Mapping[str, Any],
        *,
        access_key_id: str | None = None,
        auto_register: bool = False,
        received_at: float | None = None,
    ) -> bool:
        """Store one validated ``SendHeartbeat`` request (JSON-decoded) and commit.

        Returns True when stored, False when the request is a resend of one already stored (its
        resend key, docs/store.md): nothing is written then, and the endpoint answers it as a
        first send.  Raises ``DeviceRefused`` (nothing stored) when the device may not send.
        """
        hb = parse_heartbeat(request, self._clock() if received_at is None else received_at)
        stored = self._record_known(hb, access_key_id)
        if stored is not None:
            return stored
        try:
            with self._write() as db:
                fresh, device_id, stream_id = self._store(db, hb, access_key_id, auto_register)
        except Resend:
            return False
        self._remember_series(fresh)
        stream = None
        if hb.spool_key is not None and stream_id is not None:
            stream = (hb.spool_key[0], stream_id)
        self._remember_ids(hb.device, device_id, stream)
        return True

    def _record_known(self, hb: Heartbeat, access_key_id: str | None) -> bool | None:
        """A backend's shortcut for the usual heartbeat: a registered device, series, key and
        resend stream already numbered.  True: stored; False: a resend; None: not taken, the
        transaction of ``_store`` decides (and answers refusals)."""
        return None

    def _store(
        self, db: Db, hb: Heartbeat, access_key_id: str | None, auto_register: bool
    ) -> tuple[dict[tuple[int, SeriesKey], int], int, int | None]:
        """Store ``hb`` in ``db``'s transaction: the series to remember once it commits, the
        device id and the resend stream id."""
        # the device row first: it numbers the heartbeat and the new series, and in a backend
        # with row locks it keeps two writers of one device in turn
        device_id, number = self._claim_device(db, hb, auto_register)
        stream_id: int | None = None
        seq: float | None = None
        if hb.spool_key is not None:
            seq = hb.spool_key[1]
            stream_id, stored = self._stream(db, device_id, hb.spool_key[0], seq)
            if stored:  # raw, or already rolled up
                raise Resend
        numbers, fresh = self._series_numbers(db, device_id, [key for key, _, _ in hb.points])
        inserted = db.run(
            INSERT_HEARTBEAT,
            (device_id, hb.ts, number, hb.received_at, hb.agent_version,
             self._key_id(db, access_key_id), stream_id, seq, points_blob(hb, numbers)),
        )
        if not inserted:  # another process stored the same key meanwhile
            raise Resend
        self._update_latest(db, latest_rows(device_id, hb, numbers))
        db.many(
            "INSERT INTO models(device_id, model_name, model_version, first_seen, last_seen, "
            "latest_sample_time, latest_inference) VALUES (?, ?, ?, ?, ?, ?, ?) " + UPSERT_MODEL,
            [
                (device_id, m.name, m.version, hb.received_at, hb.received_at,
                 m.latest_sample_time, m.latest_inference)
                for m in hb.models
            ],
        )
        if hb.deployment_result is not None:
            db.run(
                "INSERT INTO deployment_results(device_id, received_at, deployment_name, "
                "deployment_status, status_message, start_time, end_time, models) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, hb.received_at, *hb.deployment_result),
            )
        return fresh, device_id, stream_id

    def _claim_device(self, db: Db, hb: Heartbeat, auto_register: bool) -> tuple[int, int]:
        """The device's id and its heartbeat count with this one, its row updated (and locked).

        One statement when the device is registered in the heartbeat's fleet and not
        deregistered (every heartbeat but a device's first with ``auto_register``); otherwise
        the registry answers (``DeviceRefused``, or an auto-registration) and the row is
        counted then.  The registration is read in the transaction every time, never cached:
        a deregistration by another process or replica holds from its commit on.
        """
        values = (hb.span, hb.span, hb.received_at, hb.agent_version, hb.received_at,
                  hb.received_at)
        found = self._count_device(
            db, "WHERE name = ? AND fleet = ? AND deregistered_at IS NULL", values,
            (hb.device, hb.fleet),
        )
        if found is None:
            _, device_id = self._resolve(
                db, hb.device, hb.fleet, auto_register=auto_register, allow_deregistered=False
            )
            found = self._count_device(db, "WHERE id = ?", values, (device_id,))
            assert found is not None
        return found

    def _count_device(
        self, db: Db, where: str, values: Sequence[Any], key: Sequence[Any]
    ) -> tuple[int, int] | None:
        """``COUNT_HEARTBEAT`` on the device row ``where`` picks: its id and new heartbeat
        count, or None when no row matched.  In one statement where the engine has ``UPDATE ...
        RETURNING`` (PostgreSQL; SQLite from 3.35), else the update and a read of the row in the
        same write transaction (the SQLite of Debian 11, 3.34, which the wheels' targets run)."""
        if self.update_returning:
            rows = db.rows(COUNT_HEARTBEAT + where + " RETURNING id, heartbeats", (*values, *key))
            return (int(rows[0][0]), int(rows[0][1])) if rows else None
        if db.run(COUNT_HEARTBEAT + where, (*values, *key)) == 0:
            return None
        row = db.one("SELECT id, heartbeats FROM devices " + where, key)
        assert row is not None
        return int(row[0]), int(row[1])

    def _stream(self, db: Db, device_id: int, dimension: str, seq: float) -> tuple[int, bool]:
        """The id of a device's resend stream (made when new) and whether ``seq`` is stored in
        it: raw, or rolled up (at or below the stream's compaction mark)."""
        sql = (
            "SELECT id, CASE WHEN compacted >= ? THEN 1 WHEN EXISTS (SELECT 1 FROM heartbeats h "
            "WHERE h.stream_id = spool_streams.id AND h.seq = ?) THEN 1 ELSE 0 END "
            "FROM spool_streams WHERE device_id = ? AND dimension = ?" + self.for_share
        )
        row = db.one(sql, (seq, seq, device_id, dimension))
        if row is None:
            db.run(
                "INSERT INTO spool_streams(device_id, dimension) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                (device_id, dimension),
            )
            row = db.one(sql, (seq, seq, device_id, dimension))
            assert row is not None
        return int(row[0]), bool(row[1])
