"""Versioned schema migrations: each backend's ordered steps, applied by ``SqlStore.migrate``
(``edgetelemetry store migrate``, ``serve --migrate``), each in one transaction.

The version of a database is the highest row of its ``schema_version`` table (SQLite files of
the first schema have none: ``PRAGMA user_version`` = 1 says so).  A step only runs when the
database is below its version, so running ``migrate`` again does nothing; a database above
``SCHEMA_VERSION`` (written by a newer edgetelemetry) is refused.  A step is never edited once
released: a change of the schema (or of the encoding in ``codec.py``) is a new step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..db import Db

__all__ = ["SCHEMA_VERSION", "Step"]

# The schema this edgetelemetry reads and writes, in every backend.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Step:
    """Bring a database from ``version - 1`` (or from nothing) to ``version``."""

    version: int
    description: str
    apply: Callable[[Db, float], None]  # (db, now)
