"""The state every part of a ``Spool`` works on, declared once: ``Spool.__init__`` sets it,
``recovery``, ``aside`` and ``bounds`` read and change it; and the one place a failed write is
noted (counted, logged once by a ``FaultLog``, turned into a ``SpoolError``)."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

from ..._fs import PrivateDir
from ..faults import FaultLog
from .cursors import SinkCursor
from .errors import SpoolError
from .frames import Segment

__all__ = ["SpoolFields"]


class SpoolFields:
    """The attributes of a ``Spool`` (see its ``__init__`` for what each holds)."""

    _dir: str  # the directory's path, for messages; every access goes through _root
    _root: PrivateDir
    _quarantine: PrivateDir
    _dead: PrivateDir
    _spool_id: str
    _faults: FaultLog
    _policy: str
    _segment_bytes: int
    _quarantine_max_bytes: int
    _dead_max_bytes: int
    _max_bytes: int
    _max_age_s: float | None
    _clock: Callable[[], float]
    _mutex: threading.RLock
    _segments: list[Segment]
    _active: Segment | None
    _total_bytes: int
    _unacked: int
    _acked_upto: int
    _acked_above: set[int]
    _next_seq: int
    _seq_floor: int
    _counters: dict[str, int]
    _dirty: bool
    _doomed: list[str]
    _lock_fd: int | None
    _closed: bool
    _sinks: dict[str, SinkCursor]  # one cursor per sink when there are two or more
    _sink_names: tuple[str, ...]

    _fault_message: str | None

    def _wrote(self) -> None:
        """A write reached the disk: the spool is writable (again)."""
        if self._fault_message is not None:
            self._fault_message = None
            self._faults.ok()

    def _write_failed(self, what: str, exc: OSError) -> SpoolError:
        """Note a failed write (counted, one WARNING per class of failure) and return the
        ``SpoolError`` that says what and where; the caller raises it or carries on."""
        self._counters["write_failures"] += 1
        self._dirty = True
        message = f"spool {self._dir}: {what}: {exc.strerror or exc}"
        self._fault_message = message
        self._faults.failed(_fault_class(exc), message)
        return SpoolError(message)


def _fault_class(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return "I/O error"
