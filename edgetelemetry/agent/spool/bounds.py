"""The spool's cursor and bounds: which records are pending, acking, and eviction by age and
by bytes, oldest first (``Spool`` is one class; this is its bookkeeping half).

The cursor is "acked up to N" plus the acked sequence numbers above N; losses are counted.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from .errors import SpoolClosedError
from .fields import SpoolFields
from .frames import Segment

__all__ = ["SpoolBounds"]

log = logging.getLogger(__name__)


class SpoolBounds(SpoolFields):
    """Cursor and bounds of a ``Spool`` (a base class: it works on the spool's own state)."""

    def _seal_active(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolClosedError(f"spool {self._dir} is closed")

    def _check_issued(self, seq: int) -> None:
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"sequence numbers are positive ints, not {seq!r}")
        if seq >= self._next_seq:
            raise ValueError(f"sequence number {seq} was never issued by this spool")

    def _locate(self, seq: int) -> tuple[Segment, int] | None:
        for seg in self._segments:
            if seg.seqs and seg.seqs[0] <= seq <= seg.seqs[-1]:
                j = bisect_left(seg.seqs, seq)
                if seg.seqs[j] == seq:
                    return seg, j
                return None
        return None

    if TYPE_CHECKING:  # in SpoolSinks, a base beside this one: no stub to shadow it at run time
        def _sinks_drop(self, seq: int) -> None: ...

    def _mark(self, seg: Segment, seq: int) -> None:
        """Mark a present, pending record acked (delivered, evicted or dead-lettered)."""
        self._sinks_drop(seq)  # lost for any sink that did not have it yet
        self._acked_above.add(seq)
        seg.unacked -= 1
        self._unacked -= 1
        self._dirty = True
        if not seg.unacked and seg is not self._active:
            self._drop(seg)

    def _drop(self, seg: Segment) -> None:
        self._segments.remove(seg)
        self._total_bytes -= seg.size
        self._doomed.append(seg.name)

    def _first_unacked(self) -> tuple[Segment, int] | None:
        for seg in self._segments:
            if not seg.unacked:
                continue
            for j in range(bisect_right(seg.seqs, self._acked_upto), len(seg.seqs)):
                if seg.seqs[j] not in self._acked_above:
                    return seg, j
        return None

    def _compact(self) -> None:
        """Advance "acked up to N" to just below the oldest pending record.

        Seqs in between that are not on disk were acked, evicted, lost or never issued (the
        block reservation skips some), and none can appear later because seqs only grow.
        """
        first = self._first_unacked()
        upto = first[0].seqs[first[1]] - 1 if first is not None else self._next_seq - 1
        if upto > self._acked_upto:
            self._acked_upto = upto
            self._acked_above = {s for s in self._acked_above if s > upto}
            self._dirty = True

    def _evict_by_age(self, now: float) -> None:
        """Evict pending records older than max_age_s from the front of the log.

        Stops at the first young record, so eviction stays oldest-first even when the clock
        jumped; the byte bound still holds whatever the timestamps say.
        """
        if self._max_age_s is None:
            return
        cutoff = now - self._max_age_s
        lost = 0
        for seg in list(self._segments):
            if not seg.unacked:
                continue
            for j in range(bisect_right(seg.seqs, self._acked_upto), len(seg.seqs)):
                seq = seg.seqs[j]
                if seq in self._acked_above:
                    continue
                if not seg.stamps[j] < cutoff:
                    break
                lost += 1
                self._counters["evicted_bytes"] += seg.lengths[j]
                self._mark(seg, seq)
            else:
                continue
            break
        if lost:
            log.warning("spool %s: age bound evicted %d unsent records", self._dir, lost)
            self._counters["evicted_records"] += lost
            self._counters["evicted_by_age_records"] += lost
            self._compact()

    def _evict_by_size(self, incoming: int) -> None:
        """Drop whole segments, oldest first, until ``incoming`` more bytes fit."""
        while self._segments and self._total_bytes + incoming > self._max_bytes:
            seg = self._segments[0]
            lost = 0
            for j in range(len(seg.seqs)):
                seq = seg.seqs[j]
                if seq > self._acked_upto and seq not in self._acked_above:
                    self._acked_above.add(seq)
                    self._sinks_drop(seq)
                    self._counters["evicted_bytes"] += seg.lengths[j]
                    lost += 1
            if lost:
                log.warning("spool %s: byte bound evicted %d unsent records", self._dir, lost)
            self._counters["evicted_records"] += lost
            self._counters["evicted_by_size_records"] += lost
            self._unacked -= seg.unacked
            seg.unacked = 0
            self._dirty = True
            if seg is self._active:
                self._seal_active()  # drops it, as it is now fully acked
            else:
                self._drop(seg)
            self._compact()
