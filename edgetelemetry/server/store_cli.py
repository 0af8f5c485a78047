"""The store's subcommands, ``edgetelemetry store migrate`` and ``edgetelemetry store compact``,
and the retention options ``serve`` shares with ``compact``.

Each entry point takes ``argv`` (without the subcommand) and returns an exit status: 0 done,
2 a bad argument or a store that cannot be used (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from .store import (
    DEFAULT_KEEP_HOURLY,
    DEFAULT_KEEP_RAW,
    DEFAULT_STORE,
    SCHEMA_VERSION,
    Compactor,
    FleetStore,
    StoreError,
    is_postgresql,
    open_store,
)
from .store.base import DAY
from .store.compaction import Compaction
from .store.retention import DEFAULT_BUDGET, DEFAULT_INTERVAL, check_retention

__all__ = [
    "add_retention_arguments",
    "compact_main",
    "migrate_main",
    "retention_of",
    "start_compactor",
]

STORE_HELP = (
    "the store: a SQLite file (default %(default)s) or a PostgreSQL URL "
    "postgresql://user:password@host:port/dbname"
)


def _days(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a positive number of days")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError("must be a number of seconds, 0 or more")
    return value


def add_retention_arguments(p: argparse.ArgumentParser) -> None:
    """``--keep-raw`` and ``--keep-hourly`` (days), for ``serve`` and ``store compact``."""
    p.add_argument(
        "--keep-raw", type=_days, default=DEFAULT_KEEP_RAW / DAY, metavar="DAYS",
        help="keep raw heartbeats this many days (by metric time), then roll them up into "
        "hourly aggregates (default %(default)g)",
    )
    p.add_argument(
        "--keep-hourly", type=_days, default=DEFAULT_KEEP_HOURLY / DAY, metavar="DAYS",
        help="keep hourly aggregates (and deployment results) this many days "
        "(default %(default)g)",
    )


def retention_of(args: argparse.Namespace) -> tuple[float, float]:
    """``(keep_raw, keep_hourly)`` in seconds; ``ValueError`` when they do not fit together."""
    keep_raw, keep_hourly = args.keep_raw * DAY, args.keep_hourly * DAY
    check_retention(keep_raw, keep_hourly)
    return keep_raw, keep_hourly


def start_compactor(store: FleetStore, args: argparse.Namespace) -> Compactor | None:
    """The server's compactor (``--compact-every`` seconds; 0: none), started."""
    if not args.compact_every:
        return None
    keep_raw, keep_hourly = retention_of(args)
    compactor = Compactor(
        store, keep_raw=keep_raw, keep_hourly=keep_hourly, interval=args.compact_every,
        budget=DEFAULT_BUDGET,
    )
    compactor.start()
    return compactor


def add_compaction_arguments(p: argparse.ArgumentParser) -> None:
    """``serve``'s retention options: those of ``store compact`` and ``--compact-every``."""
    add_retention_arguments(p)
    p.add_argument(
        "--compact-every", type=_seconds, default=DEFAULT_INTERVAL, metavar="SECONDS",
        help=f"run a compaction pass this often, at most {DEFAULT_BUDGET:g} s each "
        "(default %(default)g; 0: never, e.g. when 'edgetelemetry store compact' runs from cron)",
    )


def _open(target: str, *, migrate: bool = False) -> Compaction:
    """An existing store (a missing SQLite file is an error here, not a new store)."""
    if not is_postgresql(target) and not os.path.isfile(target):
        raise StoreError(f"no store at {target}")
    return open_store(target, migrate=migrate)


def migrate_main(argv: Sequence[str] | None = None) -> int:
    """``edgetelemetry store migrate --store TARGET``: bring a store to this version's schema."""
    p = argparse.ArgumentParser(
        prog="edgetelemetry store migrate",
        description="Upgrade an endpoint store to the schema of this edgetelemetry "
        f"(version {SCHEMA_VERSION}), each step in one transaction; running it again does "
        "nothing. A store written by a newer edgetelemetry is refused. Back the store up first.",
    )
    p.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
    args = p.parse_args(argv)
    try:
        with _open(args.store, migrate=True) as store:
            applied = store.migrations_applied + store.migrate()
            version = store.schema_version()
    except StoreError as exc:
        print(f"edgetelemetry store migrate: {exc}", file=sys.stderr)
        return 2
    for step, description in applied:
        print(f"applied {step}: {description}")
    print(f"{store.path}: schema version {version}" + ("" if applied else " (up to date)"))
    return 0


def compact_main(argv: Sequence[str] | None = None) -> int:
    """``edgetelemetry store compact``: one compaction pass, printed as JSON."""
    p = argparse.ArgumentParser(
        prog="edgetelemetry store compact",
        description="Roll raw heartbeats older than --keep-raw up into hourly aggregates and "
        "drop aggregates older than --keep-hourly (what 'serve' does in the background). Safe "
        "beside a running server: it works in small transactions.",
    )
    p.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
    add_retention_arguments(p)
    p.add_argument(
        "--budget", type=_seconds, default=0, metavar="SECONDS",
        help="stop after this many seconds (default: run until done)",
    )
    args = p.parse_args(argv)
    try:
        keep_raw, keep_hourly = retention_of(args)
    except ValueError as exc:
        p.error(str(exc))
    started = time.monotonic()
    try:
        with _open(args.store) as store:
            report = store.compact(
                keep_raw=keep_raw, keep_hourly=keep_hourly, budget=args.budget or None
            )
    except StoreError as exc:
        print(f"edgetelemetry store compact: {exc}", file=sys.stderr)
        return 2
    out = asdict(report)
    out["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(out))
    return 0
