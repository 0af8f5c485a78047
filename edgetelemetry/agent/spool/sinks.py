"""Per-sink cursors: one spool, several delivery targets, each with its own durable cursor
(``Spool`` is one class; this is its multi-sink half, docs/spool-format.md).

With two or more sinks, each has ``sink-<name>.cursor`` beside the spool's ``cursor``: "acked up
to N" plus the acked seqs above N, the same form and the same atomic replacement.  A record is
pending for a sink until that sink acks or dead-letters it; it leaves the spool (the spool's
own cursor) once every sink has it.  Records the spool drops for its bounds or for damage count
as ``lost`` for each sink that did not have them yet.  Sink cursors are written before the
spool's cursor, so a crash in between leaves a sink ahead of the spool (the next open finishes
the job), never behind it.  With one sink the spool's cursor is that sink's and no file is kept.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..._fs import PrivateDir
from .cursors import SinkCursor, encode_sink_cursor, parse_sink_cursor, sink_cursor_file
from .errors import SpoolPermissionError
from .fields import SpoolFields
from .frames import Segment
from .layout import CURSOR_MAX, unusable

__all__ = ["SpoolSinks"]

log = logging.getLogger(__name__)

class SpoolSinks(SpoolFields):
    """The sink cursors of a ``Spool`` (a base class: it works on the spool's own state)."""

    if TYPE_CHECKING:  # the other bases' methods; no stubs to shadow them at run time
        def _write_atomic(self, directory: PrivateDir, name: str, data: bytes) -> None: ...
        def _quarantine_bytes(self, source: str, offset: int, data: bytes) -> None: ...
        def _move_aside(self, name: str, why: Exception) -> None: ...
        def _mark(self, seg: Segment, seq: int) -> None: ...
        def _locate(self, seq: int) -> tuple[Segment, int] | None: ...
        def _compact(self) -> None: ...

    def stats(self) -> dict[str, int]:
        raise NotImplementedError

    def sink_stats(self, sink: str) -> dict[str, int]:
        """One sink's figures: ``records`` it has not had yet, its ``oldest_unsent_age_s``, and
        cumulative ``delivered``, ``lost`` (dropped by the spool's bounds or damage before the
        sink had them) and ``dead_letters``.  With one sink, the spool's own figures (its
        ``delivered`` is not counted: 0)."""
        with self._mutex:
            stats = self.stats()
            cursor = self._sink(sink)
            if cursor is not None:
                return self._sink_stats(cursor, self._clock())
            return {"records": stats["records"], "oldest_unsent_age_s":
                    stats["oldest_unsent_age_s"], "delivered": 0,
                    "lost": stats["evicted_records"], "dead_letters": stats["dead_letters"]}

    # -- which sink ----------------------------------------------------------------------------

    def _sink(self, name: str | None) -> SinkCursor | None:
        """The cursor of sink ``name``; None when the spool's own cursor serves (one sink, or
        no sink named)."""
        if name is None or not self._sinks:
            if name is not None and name not in self._sink_names:
                raise ValueError(f"sink {name!r} is not one of this spool's sinks "
                                 f"{list(self._sink_names)}")
            return None
        cursor = self._sinks.get(name)
        if cursor is None:
            raise ValueError(f"sink {name!r} is not one of this spool's sinks "
                             f"{list(self._sinks)}")
        return cursor

    def _held(self, seq: int) -> bool:
        """Is a record the spool holds still wanted by some sink?"""
        return any(not c.has(seq) for c in self._sinks.values())

    # -- changes -------------------------------------------------------------------------------

    def _sink_take(self, cursor: SinkCursor, seq: int, counter: str) -> bool:
        """Mark a record the spool holds as had by ``cursor``'s sink (``counter``: delivered or
        dead_letters); False if it had it already."""
        if cursor.has(seq):
            return False
        cursor.acked_above.add(seq)
        cursor.unacked -= 1
        cursor.counters[counter] += 1
        cursor.dirty = True
        self._sink_compact(cursor)
        return True

    def _sinks_drop(self, seq: int) -> None:
        """The spool is dropping a record (bounds, damage, a dead letter of the spool's own):
        lost for each sink that did not have it."""
        for cursor in self._sinks.values():
            if not cursor.has(seq):
                cursor.acked_above.add(seq)
                cursor.unacked -= 1
                cursor.counters["lost"] += 1
                cursor.dirty = True

    def _sink_compact(self, cursor: SinkCursor) -> None:
        """Advance the sink's "acked up to N" to just below its oldest record still held."""
        first = next(self._held_seqs(cursor.acked_upto, cursor), None)
        upto = first - 1 if first is not None else self._next_seq - 1
        if upto > cursor.acked_upto:
            cursor.acked_upto = upto
            cursor.acked_above = {s for s in cursor.acked_above if s > upto}
            cursor.dirty = True

    def _held_seqs(self, after: int, cursor: SinkCursor | None) -> Iterator[int]:
        """Seqs above ``after`` the spool holds unacked, oldest first, less those ``cursor``'s
        sink has."""
        floor = max(after, self._acked_upto)
        for seg in self._segments:
            if not seg.unacked or seg.seqs[-1] <= floor:
                continue
            for j in range(bisect_right(seg.seqs, floor), len(seg.seqs)):
                seq = seg.seqs[j]
                if seq not in self._acked_above and (cursor is None or not cursor.has(seq)):
                    yield seq

    def _sink_oldest(self, cursor: SinkCursor) -> tuple[Segment, int] | None:
        seq = next(self._held_seqs(cursor.acked_upto, cursor), None)
        return self._locate(seq) if seq is not None else None

    # -- files ---------------------------------------------------------------------------------

    def _open_sinks(self, names: tuple[str, ...]) -> None:
        """Load each sink's cursor (a new sink starts with everything the spool holds), then
        let go of records every sink already has (a crash between a sink's cursor and the
        spool's)."""
        self._sink_names = names
        self._sinks = {}
        if len(names) < 2:
            return
        for name in names:
            cursor = self._load_sink(name)
            if cursor is None:
                cursor = SinkCursor(name, self._acked_upto, set(self._acked_above), dirty=True)
            self._sinks[name] = cursor
        for seq in list(self._held_seqs(0, None)):
            if not self._held(seq):
                where = self._locate(seq)
                if where is not None:
                    self._mark(where[0], seq)
        for cursor in self._sinks.values():
            cursor.unacked = sum(1 for _ in self._held_seqs(cursor.acked_upto, cursor))
            self._sink_compact(cursor)
        self._compact()

    def _load_sink(self, name: str) -> SinkCursor | None:
        """A sink's cursor as the spool's own is read (``_load_cursor``): through the held
        spool directory, never through a symlink, never a FIFO, never read whole if huge.
        Anything there that is not a file of ours is moved aside untouched; damage is
        quarantined."""
        filename = sink_cursor_file(name)
        try:
            raw = self._root.read(filename, CURSOR_MAX + 1)
        except FileNotFoundError:
            return None
        except (OSError, SpoolPermissionError) as exc:
            if not unusable(exc):
                raise
            self._move_aside(filename, exc)
            return None
        try:
            if len(raw) > CURSOR_MAX:
                raise ValueError(f"larger than {CURSOR_MAX} bytes")
            return parse_sink_cursor(name, raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("spool %s: cursor of sink %s unreadable (%s); quarantined, the sink "
                      "gets every record the spool holds again", self._dir, name, exc)
            self._counters["corruption_events"] += 1
            self._quarantine_bytes(filename, 0, raw[:CURSOR_MAX])
            self._root.remove(filename)
            self._dirty = True
            return None

    def _persist_sinks(self) -> bool:
        """Write every changed sink cursor (before the spool's own: see the module docstring),
        atomically through the held spool directory; True if any was written."""
        wrote = False
        for cursor in self._sinks.values():
            if not cursor.dirty:
                continue
            self._sink_compact(cursor)
            self._write_atomic(self._root, sink_cursor_file(cursor.name),
                               encode_sink_cursor(cursor))
            cursor.dirty = False
            wrote = True
        return wrote

    def _sink_stats(self, cursor: SinkCursor, now: float) -> dict[str, int]:
        oldest = self._sink_oldest(cursor)
        age = max(0, int(now - oldest[0].stamps[oldest[1]])) if oldest is not None else 0
        return {"records": cursor.unacked, "oldest_unsent_age_s": age, **cursor.counters}
