"""The endpoint's PostgreSQL store: the same ``FleetStore`` as SQLite's, for fleets that outgrow
one machine: several ``serve`` workers and replicas write to one database.

psycopg 3 with a ``psycopg_pool.ConnectionPool`` (install ``edgetelemetry[postgresql]``).  Each
write is one transaction on a pooled connection; a heartbeat's transaction locks its device's
row first, so two writers of one device take turns while all other devices go on in parallel,
and the unique resend key holds across processes and replicas (a second insert of a key waits
for the first and then does nothing).  Compaction takes rows out with ``DELETE ... RETURNING``,
so two replicas compacting at once never roll the same heartbeat up twice.

The URL is a libpq URL, ``postgresql://user:password@host:port/dbname?sslmode=...``; ``path``
shows it without the password.
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .base import StoreError
from .compaction import Compaction
from .db import Db
from .lead import PgLeads
from .migrations import Step
from .migrations.postgresql import STEPS, schema_version
from .request import Heartbeat, SeriesKey
from .writes import COUNT_HEARTBEAT, UPSERT_MODEL, latest_rows, points_blob

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["DEFAULT_POOL_SIZE", "PostgresStore", "redact_url"]

DEFAULT_POOL_SIZE = 10
_CONNECT_TIMEOUT = 10.0  # seconds to wait for a connection (pool or server)
# any constant: the advisory lock migrations take, so replicas starting together migrate once
_MIGRATION_LOCK = 0x6574_6D67
_RESEND_KEY = "heartbeats_resend_key"  # the unique index on heartbeats(stream_id, seq)


def redact_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


class _PgDb:
    """``Db`` over one psycopg connection: ``?`` placeholders become ``%s``."""

    _converted: dict[str, str] = {}

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @classmethod
    def _sql(cls, sql: str) -> str:
        converted = cls._converted.get(sql)
        if converted is None:
            converted = cls._converted[sql] = sql.replace("?", "%s")
        return converted

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(self._sql(sql), params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(
            self._sql(sql), params
        ).fetchone()
        return row

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(self._sql(sql), params).rowcount

    def many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        rows = list(params)
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def script(self, sql: str) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                self.conn.execute(statement.encode())


class PostgresStore(Compaction):
    """PostgreSQL-backed state of the endpoint; thread-safe; ``close()`` or use as a context
    manager.  ``migrate`` and ``read_only`` as for the SQLite ``Store``; ``pool_size`` bounds
    the connections this process opens."""

    for_share = " FOR SHARE"
    for_update = " FOR NO KEY UPDATE"

    def __init__(
        self,
        url: str,
        clock: Callable[[], float] = time.time,
        *,
        migrate: bool = False,
        read_only: bool = False,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        super().__init__(clock)
        self.url = url
        self.path = redact_url(url)
        self._read_only = read_only
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StoreError(
                "a PostgreSQL store needs psycopg 3 and psycopg_pool: "
                "pip install 'edgetelemetry[postgresql]'"
            ) from None
        self._errors: tuple[type[BaseException], ...] = (psycopg.OperationalError,)
        self._unique_violation = psycopg.errors.UniqueViolation
        options = "-c default_transaction_read_only=on" if read_only else ""
        settings = {"autocommit": True, "options": options,
                    "connect_timeout": int(_CONNECT_TIMEOUT)}
        try:  # once by hand: the pool would retry a wrong password until its timeout
            psycopg.connect(url, **settings).close()  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the store {self.path}: {_reason(exc)}") from None
        self._leads = PgLeads(url, settings)
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=settings,
            timeout=_CONNECT_TIMEOUT,
            open=False,
            name="edgetelemetry-store",
        )
        try:
            try:
                self._pool.open(wait=True, timeout=_CONNECT_TIMEOUT)
            except Exception as exc:
                raise StoreError(
                    f"cannot connect to the store {self.path}: {_reason(exc)}"
                ) from None
            if read_only:
                self._check_current()
            else:
                self._open_schema(migrate)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        self._check_open()
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._errors as exc:
            raise StoreError(f"the store {self.path} is unreachable: {_reason(exc)}") from None
        except TimeoutError as exc:  # PoolTimeout: every connection busy or none possible
            raise StoreError(f"no connection to the store {self.path}: {exc}") from None

    @contextlib.contextmanager
    def _read(self) -> Iterator[Db]:
        with self._connection() as conn:
            yield _PgDb(conn)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Db]:
        self._check_writable(self._read_only)
        with self._connection() as conn, conn.transaction():
            yield _PgDb(conn)

    def _steps(self) -> Sequence[Step]:
        return STEPS

    def _schema_version(self, db: Db) -> int:
        try:
            return schema_version(db)
        except ValueError:
            raise StoreError(
                f"{self.path} holds tables of another application (no schema_version table): "
                "give the endpoint a database (or schema) of its own"
            ) from None

    def _lock_schema(self, db: Db) -> None:
        db.one("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    def _after_step(self, db: Db, version: int) -> None:
        """Nothing beside ``schema_version``."""

    def _known(
        self, hb: Heartbeat, access_key_id: str | None
    ) -> tuple[int, int | None, int | None, dict[SeriesKey, int]] | None:
        """The remembered device id, key id, resend stream id and series numbers ``hb`` needs,
        or None when one is missing."""
        device_id = self._device_ids.get(hb.device)
        key_id = self._keys.get(access_key_id) if access_key_id is not None else None
        if device_id is None or (access_key_id is not None and key_id is None):
            return None
        stream_id: int | None = None
        if hb.spool_key is not None:
            stream_id = self._stream_ids.get((device_id, hb.spool_key[0]))
            if stream_id is None:
                return None
        numbers = {}
        with self._series_lock:
            for key, _, _ in hb.points:
                number = self._series.get((device_id, key))
                if number is None:
                    return None
                numbers[key] = number
        return device_id, key_id, stream_id, numbers

    def _learn(self, hb: Heartbeat, access_key_id: str | None) -> None:
        """Remember what the store already holds of ``hb``'s device (id, series, resend
        stream) and access key, in one committed read: a worker's first heartbeat of a device
        another worker or replica numbered costs a read, not the transaction."""
        dimension = hb.spool_key[0] if hb.spool_key is not None else None
        with self._read() as db:
            rows = db.rows(
                "SELECT d.id, (SELECT id FROM spool_streams WHERE device_id = d.id AND "
                "dimension = ?), (SELECT id FROM access_keys WHERE name = ?), s.number, s.agent, "
                "s.model, s.version, s.metric, s.dimension FROM devices d LEFT JOIN series s "
                "ON s.device_id = d.id WHERE d.name = ?",
                (dimension, access_key_id, hb.device),
            )
        if not rows:
            return
        device_id = int(rows[0][0])
        stream_id, key_id = rows[0][1], rows[0][2]
        if access_key_id is not None and key_id is not None:
            self._keys[access_key_id] = int(key_id)
        self._remember_series({
            (device_id, (int(r[4]), r[5], r[6], r[7], r[8])): int(r[3])
            for r in rows if r[3] is not None
        })
        stream = None if dimension is None or stream_id is None else (dimension, int(stream_id))
        self._remember_ids(hb.device, device_id, stream)

    def _record_known(self, hb: Heartbeat, access_key_id: str | None) -> bool | None:
        """The usual heartbeat in one statement, one round trip and its own transaction
        (``heartbeat_statement``) instead of a transaction of seven; None, and the transaction
        of ``_store`` decides, when something is not known yet or the statement stored nothing
        (a refused device, a resend, a stale id)."""
        self._check_writable(self._read_only)
        if len({(m.name, m.version) for m in hb.models}) != len(hb.models):
            return None  # one upsert must not touch a row twice: the transaction does them
        known = self._known(hb, access_key_id)
        if known is None:  # a device this process has not seen yet (another worker has)
            self._learn(hb, access_key_id)
            known = self._known(hb, access_key_id)
            if known is None:  # new to the store too: the transaction numbers it
                return None
        device_id, key_id, stream_id, numbers = known
        seq = hb.spool_key[1] if hb.spool_key is not None else None
        latest = latest_rows(device_id, hb, numbers)
        params: list[Any] = []
        if stream_id is not None:
            params += [stream_id, device_id]
        params += [hb.span, hb.span, hb.received_at, hb.agent_version, hb.received_at,
                   hb.received_at, device_id, hb.device, hb.fleet]
        if stream_id is not None:
            params += [seq, stream_id, seq]
        params += [hb.ts, hb.received_at, hb.agent_version, key_id, stream_id, seq,
                   points_blob(hb, numbers)]
        if latest:  # one array a column: the statement's text and parameter count stay short
            params += [_numbers([r[3] for r in latest]), _numbers([r[0] for r in latest]),
                       _numbers([r[1] for r in latest])]
        if hb.models:
            params += [hb.received_at, hb.received_at, _texts([m.name for m in hb.models]),
                       _texts([m.version for m in hb.models]),
                       _numbers([m.latest_sample_time for m in hb.models]),
                       _numbers([m.latest_inference for m in hb.models])]
        if hb.deployment_result is not None:
            params += [hb.received_at, *hb.deployment_result]
        sql = heartbeat_statement(stream_id is not None, bool(latest), bool(hb.models),
                                  hb.deployment_result is not None)
        with self._connection() as conn:
            try:
                row = conn.execute(sql, params).fetchone()
            except self._unique_violation as exc:
                if exc.diag.constraint_name != _RESEND_KEY:
                    raise
                return False  # another writer stored this resend key meanwhile: rolled back
        return True if row is not None and row[0] == 1 else None

    def _update_latest(self, db: Db, rows: list[tuple[Any, ...]]) -> None:
        # one statement instead of one a series: (ts, value, device_id, number, ts) rows
        if not rows:
            return
        values = ", ".join(["(?::integer, ?::double precision, ?::double precision)"] * len(rows))
        db.run(
            "UPDATE series AS s SET last_ts = v.ts, last_value = v.value "
            f"FROM (VALUES {values}) AS v(number, ts, value) WHERE s.device_id = ? "
            "AND s.number = v.number AND (s.last_ts IS NULL OR s.last_ts <= v.ts)",
            [x for ts, value, _, number, _ in rows for x in (number, ts, value)] + [rows[0][2]],
        )

    def _take_raw(
        self, db: Db, device_id: int, until: tuple[float, int]
    ) -> list[tuple[float, int, int | None, float | None, bytes]]:
        # rows a concurrent compaction deleted first are skipped: each is returned once
        rows = db.rows(
            "DELETE FROM heartbeats WHERE device_id = ? AND (ts, number) <= (?, ?) "
            "RETURNING ts, number, stream_id, seq, points",
            (device_id, *until),
        )
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def hold_lead(self, name: str) -> bool:
        """Whether this process holds the lead ``name`` among all sharing the database, taking
        it when it is free (``lead.PgLeads``: a session advisory lock)."""
        return self._leads.hold(name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        leads = getattr(self, "_leads", None)
        if leads is not None:
            leads.close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()


_STATEMENTS: dict[tuple[bool, bool, bool, bool], str] = {}


def heartbeat_statement(keyed: bool, latest: bool, models: bool, deployment: bool) -> str:
    """One statement that stores a heartbeat of a known device, series and resend stream: what
    ``writes._store`` does in a transaction, with the same effects, as data-modifying CTEs.

    ``d`` counts the heartbeat on the device row (locking it) only when the device is still
    registered in this fleet under this id and, with a resend key, when the key is neither
    rolled up (the stream row read ``FOR SHARE``, as ``_stream`` does, so a compaction in
    progress is waited for) nor stored raw; every other part writes only for the row ``d``
    returned, so when ``d`` matches nothing the statement stores nothing and returns 0.  A key
    stored by a concurrent writer fails the unique index and the whole statement.  The latest
    values and the models come as one array a column, so there are 16 texts in all, each short
    and with few parameters: psycopg caches its parsing of them (only under 4 KB and 50
    parameters) and prepares them on the server after a few uses.
    """
    shape = (keyed, latest, models, deployment)
    found = _STATEMENTS.get(shape)
    if found is not None:
        return found
    parts = []
    check = ""
    if keyed:
        parts.append("s AS (SELECT compacted FROM spool_streams WHERE id = ? AND device_id = ? "
                     "FOR SHARE)")
        check = (" AND EXISTS (SELECT 1 FROM s WHERE s.compacted IS NULL OR s.compacted < ?) "
                 "AND NOT EXISTS (SELECT 1 FROM heartbeats WHERE stream_id = ? AND seq = ?)")
    parts.append(
        "d AS (" + COUNT_HEARTBEAT + "WHERE id = ? AND name = ? AND fleet = ? "
        "AND deregistered_at IS NULL" + check + " RETURNING id, heartbeats)"
    )
    parts.append(
        "h AS (INSERT INTO heartbeats(device_id, ts, number, received_at, agent_version, key_id, "
        "stream_id, seq, points) SELECT id, ?::double precision, heartbeats, "
        "?::double precision, ?::text, ?::integer, ?::integer, ?::double precision, ?::bytea "
        "FROM d RETURNING device_id)"
    )
    if latest:
        parts.append(
            "l AS (UPDATE series AS x SET last_ts = v.ts, last_value = v.value FROM h, "
            "unnest(?::integer[], ?::double precision[], ?::double precision[]) "
            "AS v(number, ts, value) WHERE x.device_id = h.device_id "
            "AND x.number = v.number AND (x.last_ts IS NULL OR x.last_ts <= v.ts))"
        )
    if models:
        parts.append(
            "m AS (INSERT INTO models(device_id, model_name, model_version, first_seen, "
            "last_seen, latest_sample_time, latest_inference) SELECT h.device_id, v.name, "
            "v.version, ?::double precision, ?::double precision, v.sample, v.inference "
            "FROM h, unnest(?::text[], ?::text[], ?::double precision[], "
            "?::double precision[]) AS v(name, version, sample, inference) " + UPSERT_MODEL + ")"
        )
    if deployment:
        parts.append(
            "r AS (INSERT INTO deployment_results(device_id, received_at, deployment_name, "
            "deployment_status, status_message, start_time, end_time, models) SELECT device_id, "
            "?::double precision, ?::text, ?::text, ?::text, ?::double precision, "
            "?::double precision, ?::text FROM h)"
        )
    found = ("WITH " + ", ".join(parts) + " SELECT count(*) FROM h").replace("?", "%s")
    _STATEMENTS[shape] = found
    return found


# Arrays go as PostgreSQL array literals (text the statement casts): psycopg's list dumper
# inspects every list in Python on every call, several times the cost of writing the literal.
def _numbers(values: Sequence[float | int | None]) -> str:
    """``{1,2.5,NULL}``: ints and finite floats (validated) in their exact repr."""
    return "{" + ",".join("NULL" if v is None else repr(v) for v in values) + "}"


def _texts(values: Sequence[str]) -> str:
    """``{"a","b\\"c"}``: every element quoted, backslash and double quote escaped."""
    return "{" + ",".join(
        '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values
    ) + "}"


def _reason(exc: BaseException) -> str:
    """An error's first line, with any password in a URL it quotes removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"(://[^:/@\s]+):[^@\s]+@", r"\1:***@", text)
