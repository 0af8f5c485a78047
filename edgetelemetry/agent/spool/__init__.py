"""A durable, bounded spool of opaque records (snapshot bytes) with a durable delivery cursor.

``spool`` (``Spool``: append, read what is unacknowledged, ack), ``recovery`` (its start-up
over whatever a crash left), ``frames`` (the on-disk frame and the scan), ``layout`` (what a
spool directory holds), ``errors``.  The format, fsync policy and recovery rules are in
``docs/spool-format.md``.
"""

from __future__ import annotations

from .errors import (
    RecordTooLargeError,
    SpoolClosedError,
    SpoolError,
    SpoolLockedError,
    SpoolPermissionError,
)
from .frames import FRAME_HEADER_SIZE, FRAME_MAGIC, Record
from .spool import FsyncPolicy, Spool

__all__ = [
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "FsyncPolicy",
    "Record",
    "RecordTooLargeError",
    "Spool",
    "SpoolClosedError",
    "SpoolError",
    "SpoolLockedError",
    "SpoolPermissionError",
]
