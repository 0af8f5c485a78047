"""The spool's reading half: the unacknowledged records, one segment's descriptor open at a
time, each verified as it is read (``Spool`` is one class; this is the part ``pending``,
``newest`` and ``dead_letter`` read through).

Damage found while reading is quarantined and the record acked as lost, so one bad sector never
wedges delivery; a segment that vanished (or was replaced by something that is not ours) is
counted lost; an I/O error raises ``SpoolError`` and leaves everything as it was.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from collections.abc import Generator
from typing import TYPE_CHECKING

from .aside import SpoolAside
from .cursors import SinkCursor
from .errors import SpoolError, SpoolPermissionError
from .frames import FRAME_HEADER_SIZE, Record, Segment, frame_at

__all__ = ["SpoolReading"]

log = logging.getLogger(__name__)


class SpoolReading(SpoolAside):
    """Reading of a ``Spool`` (a base class: it works on the spool's own state)."""

    def _abandon_active(self, seg: Segment) -> None:
        raise NotImplementedError

    def _drop(self, seg: Segment) -> None:
        raise NotImplementedError

    def _mark(self, seg: Segment, seq: int) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:  # in SpoolSinks, a base beside this one: no stub to shadow it at run time
        def _sinks_drop(self, seq: int) -> None: ...

    def _unacked_records(self, newest_first: bool,
                         cursor: SinkCursor | None = None) -> Generator[Record, None, None]:
        """The unacknowledged records (less those ``cursor``'s sink has) that read back intact,
        oldest or newest first, one segment's descriptor open at a time.  A damaged record is
        quarantined and skipped (``_read``), an unreadable segment counted lost
        (``_open_read``).  The caller holds the mutex and closes the generator, which closes
        the descriptor."""
        segments = list(self._segments)  # _open_read may drop a segment
        for seg in reversed(segments) if newest_first else segments:
            if not seg.unacked:
                continue
            fd = self._open_read(seg)
            if fd is None:
                continue
            try:
                floor = self._acked_upto if cursor is None else max(self._acked_upto,
                                                                     cursor.acked_upto)
                first = bisect_right(seg.seqs, floor)
                order = (range(len(seg.seqs) - 1, first - 1, -1) if newest_first
                         else range(first, len(seg.seqs)))
                for j in order:
                    if seg.seqs[j] not in self._acked_above and (
                            cursor is None or not cursor.has(seg.seqs[j])):
                        record = self._read(seg, j, fd)
                        if record is not None:
                            yield record
            finally:
                os.close(fd)

    def _open_read(self, seg: Segment) -> int | None:
        """A read descriptor, or None if the file vanished or was replaced by something that is
        not ours (its records are then lost, counted); ``SpoolError`` for an I/O error."""
        try:
            return self._root.open_file(seg.name, os.O_RDONLY)
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                raise SpoolError(f"spool {self._dir}: cannot read {seg.name}: "
                                 f"{exc.strerror or exc}") from exc
            self._lose_segment(seg, exc)
        except SpoolPermissionError as exc:
            self._lose_segment(seg, exc)
        return None

    def _lose_segment(self, seg: Segment, exc: Exception) -> None:
        log.error("spool %s: segment %s unreadable (%s); its records are lost", self._dir,
                  seg.name, exc)
        self._counters["corruption_events"] += 1
        for seq in seg.seqs:
            if seq > self._acked_upto and seq not in self._acked_above:
                self._acked_above.add(seq)
                self._sinks_drop(seq)
        self._unacked -= seg.unacked
        seg.unacked = 0
        self._dirty = True
        if seg is self._active:
            self._abandon_active(seg)
        if seg in self._segments:
            self._drop(seg)

    def _read(self, seg: Segment, j: int, fd: int) -> Record | None:
        """Read and verify one record; damage found now is quarantined and the record acked."""
        seq, offset, length = seg.seqs[j], seg.offsets[j], seg.lengths[j]
        try:
            raw = os.pread(fd, FRAME_HEADER_SIZE + length, offset)
        except OSError as exc:
            raise SpoolError(f"spool {self._dir}: cannot read record {seq} in {seg.name}: "
                             f"{exc.strerror or exc}") from exc
        frame = frame_at(memoryview(raw), 0, seq - 1)
        if frame is not None and frame.seq == seq and frame.length == length:
            return Record(seq, raw[FRAME_HEADER_SIZE:], frame.timestamp)
        log.error("spool %s: record %d in %s is damaged; quarantined", self._dir, seq, seg.name)
        self._counters["corruption_events"] += 1
        self._quarantine_bytes(seg.name, offset, raw)
        self._mark(seg, seq)
        return None
