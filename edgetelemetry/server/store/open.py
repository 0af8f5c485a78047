"""Opening a store from what an operator types (``--store``): a SQLite file, ``:memory:``, or a
``postgresql://`` URL (the scheme picks the backend)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .base import StoreError
from .compaction import Compaction
from .sqlite import Store

__all__ = ["is_postgresql", "open_read_only", "open_store"]

_SCHEMES = ("postgresql://", "postgres://")


def is_postgresql(target: str) -> bool:
    return target.startswith(_SCHEMES)


def open_store(
    target: str | os.PathLike[str] | None,
    *,
    clock: Callable[[], float] = time.time,
    migrate: bool = False,
) -> Compaction:
    """The store at ``target``: ``postgresql://...`` (or ``postgres://``), else a SQLite file
    (``None`` or ``:memory:``: in memory).  A new store gets the current schema; an older one is
    refused with ``SchemaOutOfDate`` unless ``migrate``."""
    if target is not None and is_postgresql(os.fspath(target)):
        from .postgresql import PostgresStore

        return PostgresStore(os.fspath(target), clock, migrate=migrate)
    path = None if target is None else os.fspath(target)
    if path is not None and "://" in path:
        raise StoreError(f"unknown store URL {path!r}: use a file path or postgresql://...")
    return Store(path, clock, migrate=migrate)


def open_read_only(target: str | os.PathLike[str]) -> Compaction:
    """Open an existing store for reading only (``fleet status`` beside a running ``serve``);
    ``StoreError`` if it is missing, not a store, or not at the current schema.

    The returned store answers the queries (``devices()``, ``models()``, ``metric_series()``...);
    its writes fail.  Close it (or use ``with``).
    """
    name = os.fspath(target)
    if is_postgresql(name):
        from .postgresql import PostgresStore

        return PostgresStore(name, read_only=True)
    if name in ("", ":memory:"):
        raise StoreError("a read-only store needs a file")
    if not os.path.isfile(name):
        raise StoreError(f"no store at {name}")
    return Store(name, read_only=True)
