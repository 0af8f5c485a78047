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

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["DEFAULT_POOL_SIZE", "PostgresStore", "redact_url"]

DEFAULT_POOL_SIZE = 10
_CONNECT_TIMEOUT = 10.0  # seconds to wait for a connection (pool or server)
# any constant: the advisory lock migrations take, so replicas starting together migrate once
_MIGRATION_LOCK = 0x6574_6D67


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

    def _count_heartbeat(self, db: Db, update: str, params: Sequence[Any]) -> int:
        row = db.one(update + " RETURNING heartbeats", params)
        assert row is not None
        return int(row[0])

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


def _reason(exc: BaseException) -> str:
    """An error's first line, with any password in a URL it quotes removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"(://[^:/@\s]+):[^@\s]+@", r"\1:***@", text)
