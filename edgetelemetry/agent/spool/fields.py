"""The state every part of a ``Spool`` works on, declared once: ``Spool.__init__`` sets it,
``recovery`` and ``bounds`` read and change it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .cursors import SinkCursor
from .frames import Segment

__all__ = ["SpoolFields"]


class SpoolFields:
    """The attributes of a ``Spool`` (see its ``__init__`` for what each holds)."""

    _dir: str
    _qdir: str
    _ddir: str
    _policy: str
    _segment_bytes: int
    _quarantine_max_bytes: int
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
