"""A durable, bounded spool of opaque records (snapshot bytes) with a durable delivery cursor.

The recorder side appends; the agent side reads what is unacknowledged, sends it and acks it.
Everything here must survive power loss, ``kill -9`` and days offline, so the rules are:

* ``append`` returns a sequence number only once the record is durable per the fsync policy.
* Damaged data never raises and never blocks start-up: it is salvaged up to (and past) the
  damage, the damaged bytes are copied to ``quarantine/`` and the event is counted.
* The cursor is "acked up to N" plus the acked sequence numbers above N, replaced atomically,
  so a restart resends nothing acknowledged and skips nothing unacknowledged.
* Disk use is bounded by bytes and by age, oldest first; losses are counted durably.

The on-disk format, fsync policy and recovery rules are documented in ``docs/spool-format.md``.
One process owns a spool at a time (an ``flock`` on ``<dir>/lock``); within it, every method
is serialised by a lock so the recorder and the sender may run on different threads.
Stdlib only; Linux/POSIX (``fcntl``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
import zlib
from bisect import bisect_right
from collections.abc import Callable, Sequence
from contextlib import closing
from itertools import islice
from typing import Literal, Union

from ..._fs import PrivateDir, datasync, write_all
from ..faults import FaultLog
from .bounds import SpoolBounds
from .cursors import SinkCursor, check_sink_names
from .errors import (
    RecordTooLargeError,
    SpoolError,
    SpoolPermissionError,
)
from .frames import FRAME_HEADER_SIZE, Record, Segment, encode_frame
from .layout import (
    COUNTERS,
    CURSOR,
    CURSOR_TAG,
    DEAD_RE,
    MAX_PAYLOAD,
    SEQ_BLOCK,
    ranges,
)
from .reading import SpoolReading
from .recovery import SpoolRecovery
from .sinks import SpoolSinks

__all__ = ["FsyncPolicy", "Spool"]

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "batch", "never"]
Payload = Union[bytes, bytearray, memoryview]


class Spool(SpoolBounds, SpoolReading, SpoolRecovery, SpoolSinks):
    """A directory of append-only segment files plus a cursor; see the module docstring.

    ``sinks`` names the delivery targets: with two or more, each has its own durable cursor
    (``sink=`` on ``pending``, ``newest``, ``ack``, ``dead_letter``, ``sink_stats``) and a
    record stays until every sink has it (``sinks.py``).

    ``fsync`` chooses what "durable" means when ``append`` returns:

    * ``"always"`` (default): the record is fdatasync'ed, and the directory fsync'ed when a
      segment file is created; survives power loss.
    * ``"batch"``: the record is written (survives a process crash) and fdatasync'ed at most
      ``batch_interval_s`` later, checked on each append, on ``sync()``, rotation and close.
    * ``"never"``: never fsync on our own (tests, tmpfs); survives a process crash only.

    Cursor writes (acks, evictions) are fsync'ed under "always" and "batch".
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 64 << 20,
        max_age_s: float | None = 7 * 86400.0,
        segment_bytes: int | None = None,
        fsync: FsyncPolicy = "always",
        batch_interval_s: float = 1.0,
        quarantine_max_bytes: int | None = None,
        dead_letter_max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        sinks: Sequence[str] = (),
    ) -> None:
        names = check_sink_names(sinks)
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"fsync must be 'always', 'batch' or 'never', not {fsync!r}")
        if max_bytes <= FRAME_HEADER_SIZE:
            raise ValueError(f"max_bytes must exceed the {FRAME_HEADER_SIZE}-byte frame header")
        if segment_bytes is None:
            segment_bytes = max(min(1 << 20, max_bytes // 8), 1)
        if not 0 < segment_bytes <= max_bytes:
            raise ValueError("segment_bytes must be positive and at most max_bytes")
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError("max_age_s must be positive, or None for no age bound")
        if not batch_interval_s >= 0:
            raise ValueError("batch_interval_s must be >= 0")
        self._dir = os.path.abspath(os.fspath(directory))
        self._spool_id = ""
        self._faults = FaultLog(log, f"spool {self._dir}")
        self._fault_message: str | None = None  # the write failure in progress, if any
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._segment_bytes = segment_bytes
        self._policy: FsyncPolicy = fsync
        self._batch_interval_s = batch_interval_s
        self._quarantine_max_bytes = (
            max_bytes // 8 if quarantine_max_bytes is None else quarantine_max_bytes
        )
        self._dead_max_bytes = (
            max_bytes // 8 if dead_letter_max_bytes is None else dead_letter_max_bytes
        )
        self._clock = clock
        self._mutex = threading.RLock()

        self._segments: list[Segment] = []
        self._active: Segment | None = None
        self._unsynced_since: float | None = None  # monotonic time of the first unsynced write
        self._total_bytes = 0
        self._unacked = 0
        self._acked_upto = 0
        self._acked_above: set[int] = set()
        self._next_seq = 1
        self._seq_floor = 1  # durable: every seq ever issued is below this
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._dirty = False
        self._doomed: list[str] = []  # segment paths to unlink once the cursor is written
        self._lock_fd: int | None = None
        self._closed = False
        self._sinks: dict[str, SinkCursor] = {}
        self._sink_names = names
        try:
            self._open()
            self._open_sinks(names)
            self._persist()
        except OSError as exc:  # a read-only or full disk, an unreadable file: say where
            self._release()
            cls = SpoolPermissionError if exc.errno in _REFUSED else SpoolError
            name = f" ({exc.filename})" if exc.filename else ""
            raise cls(f"cannot open spool {self._dir}: {exc.strerror or exc}{name}") from exc
        except BaseException:
            self._release()
            raise

    # -- public API ------------------------------------------------------------------------

    @property
    def directory(self) -> str:
        return self._dir

    @property
    def spool_id(self) -> str:
        """This spool's identity: 32 hex digits made with it and kept for its life, so
        ``(spool_id, seq)`` names a record even across a recreated directory."""
        return self._spool_id

    def report_write_failure(self, what: str, exc: OSError) -> None:
        """A write its owner made in the spool's directory failed (the agent's state file):
        counted and logged as the spool's own are, since it is the same disk."""
        with self._mutex:
            self._write_failed(what, exc)

    @property
    def fault(self) -> str | None:
        """The write failure in progress (a read-only or full disk), or None: what failed
        and where.  Cleared by the next write that succeeds."""
        return self._fault_message

    def append(self, payload: Payload) -> int:
        """Store one record; return its sequence number once durable per the fsync policy.

        Evicts the oldest records first if the byte or age bound requires it.  Raises
        ``RecordTooLargeError`` for a record that can never fit, ``SpoolError`` if it could not
        be written (nothing is stored then and the caller still owns the snapshot).
        """
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes-like, not {type(payload).__name__}")
        payload = bytes(payload)  # no copy for bytes; byte length for any memoryview
        size = FRAME_HEADER_SIZE + len(payload)
        with self._mutex:
            self._check_open()
            if len(payload) > MAX_PAYLOAD or size > self._max_bytes:
                raise RecordTooLargeError(
                    f"a {len(payload)}-byte record needs {size} bytes with its header, more "
                    f"than the spool's max_bytes={self._max_bytes}; it was not stored"
                )
            now = self._clock()
            self._evict_by_age(now)
            active = self._active
            if active is not None and active.size and active.size + size > self._segment_bytes:
                self._seal_active()
            self._evict_by_size(size)
            seq = self._next_seq
            if seq >= self._seq_floor:
                self._seq_floor = seq + SEQ_BLOCK
                self._dirty = True
            self._persist()
            if self._active is None:
                self._active = self._new_segment(seq)
            seg = self._active
            assert seg.fd is not None
            self._next_seq = seq + 1  # consumed even on failure: a partial frame may survive
            frame = encode_frame(seq, now, payload)
            try:
                write_all(seg.fd, frame)
                self._after_write(seg.fd)
            except OSError as exc:
                self._abandon_active(seg)
                raise self._write_failed(f"could not write record {seq} to {seg.name}",
                                         exc) from exc
            self._wrote()
            seg.seqs.append(seq)
            seg.offsets.append(seg.size)
            seg.lengths.append(len(payload))
            seg.stamps.append(now)
            seg.size += size
            seg.unacked += 1
            self._total_bytes += size
            self._unacked += 1
            for cursor in self._sinks.values():
                cursor.unacked += 1
            return seq

    def pending(self, limit: int | None = None, *, sink: str | None = None) -> list[Record]:
        """Unacknowledged records (of ``sink``), oldest first (at most ``limit``)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        with self._mutex:
            self._check_open()
            self._evict_by_age(self._clock())
            cursor = self._sink(sink)
            with closing(self._unacked_records(newest_first=False, cursor=cursor)) as records:
                out = list(islice(records, limit))
            self._compact()
            self._persist(strict=False)
            return out

    def newest(self, *, sink: str | None = None) -> Record | None:
        """The newest unacknowledged record (of ``sink``): what to send first after an outage."""
        with self._mutex:
            self._check_open()
            self._evict_by_age(self._clock())
            cursor = self._sink(sink)
            with closing(self._unacked_records(newest_first=True, cursor=cursor)) as records:
                found = next(records, None)
            self._compact()
            self._persist(strict=False)
            return found

    def ack(self, seq: int, *, sink: str | None = None) -> bool:
        """Mark one record delivered (to ``sink``), durably; True if it was pending (for it).

        Acks may come in any order (newest first, then the backlog).  Acking a record that
        is already acked, evicted or dead-lettered is a no-op; one never issued is a
        ``ValueError``.  If the cursor cannot be written this raises ``SpoolError``; the ack
        is kept in memory and written with the next cursor write.
        """
        with self._mutex:
            where = self._pending_location(seq)
            cursor = self._sink(sink)
            if where is None or cursor is not None and not self._sink_take(cursor, seq,
                                                                            "delivered"):
                return False
            if not self._held(seq):
                self._mark(where[0], seq)
                self._compact()
            self._persist()
            return True

    def _pending_location(self, seq: int) -> tuple[Segment, int] | None:
        """Where the pending record ``seq`` lies, or None when it is acked, evicted or dead;
        raises for a closed spool or a seq never issued.  Call with the mutex held."""
        self._check_open()
        self._check_issued(seq)
        if seq <= self._acked_upto or seq in self._acked_above:
            return None
        return self._locate(seq)

    def ack_upto(self, seq: int) -> int:
        """Mark every record up to and including ``seq`` delivered; return how many were pending."""
        with self._mutex:
            self._check_open()
            self._check_issued(seq)
            count = 0
            for seg in list(self._segments):  # _mark may drop segments
                if not seg.unacked:
                    continue
                if seg.seqs[0] > seq:
                    break
                lo = bisect_right(seg.seqs, self._acked_upto)
                hi = bisect_right(seg.seqs, seq)
                for j in range(lo, hi):
                    if seg.seqs[j] not in self._acked_above:
                        self._mark(seg, seg.seqs[j])
                        count += 1
            if count:
                self._compact()
                self._persist()
            return count

    def dead_letter(self, seq: int, reason: str, *, sink: str | None = None) -> bool:
        """Copy a pending record that can never be delivered (to ``sink``) to ``dead/`` and
        ack it (for that sink: ``dl-<seq>-<sink>.rec``).

        Returns False if the record is no longer pending (acked or evicted meanwhile).
        """
        with self._mutex:
            where = self._pending_location(seq)
            cursor = self._sink(sink)
            if where is None or cursor is not None and cursor.has(seq):
                return False
            seg, j = where
            fd = self._open_read(seg)
            rec = None
            if fd is not None:
                try:
                    rec = self._read(seg, j, fd)
                finally:
                    os.close(fd)
            if rec is None:  # damaged or vanished: already counted and acked
                self._compact()
                self._persist()
                return False
            meta: dict[str, object] = {
                "seq": seq,
                "timestamp": rec.timestamp,
                "dead_lettered_at": self._clock(),
                "reason": str(reason),
            }
            suffix = ""
            if cursor is not None:
                meta["sink"], suffix = cursor.name, f"-{cursor.name}"
            line = json.dumps(meta, sort_keys=True).encode() + b"\n"
            try:
                self._write_atomic(self._dead, f"dl-{seq:016x}{suffix}.rec", line + rec.payload)
            except OSError as exc:
                raise self._write_failed(f"could not dead-letter record {seq}", exc) from exc
            # INFO: whoever decided the record is undeliverable reports why, once
            log.info("dead-lettered record %d: %s", seq, reason)
            self._counters["dead_letters"] += 1
            if cursor is not None:
                self._sink_take(cursor, seq, "dead_letters")
            if not self._held(seq):
                self._mark(seg, seq)
            try:
                self._counters["dead_letters_dropped"] += self._trim(
                    self._dead, DEAD_RE, self._dead_max_bytes
                )
            except OSError as exc:
                self._write_failed("could not trim the dead letters", exc)
            except SpoolPermissionError as exc:
                log.error("spool %s: could not trim dead letters: %s", self._dir, exc)
            self._compact()
            self._persist()
            return True

    def stats(self) -> dict[str, int]:
        """Gauges and cumulative counters for AgentMetrics.

        Gauges: ``records`` (pending), ``bytes`` and ``files`` (segment files on disk),
        ``oldest_unsent_age_s``.  Counters are cumulative since the spool was created (they
        live in the cursor file, so they survive restarts); report deltas if you need them.
        """
        with self._mutex:
            self._check_open()
            now = self._clock()
            self._evict_by_age(now)
            self._persist(strict=False)
            oldest = self._first_unacked()
            age = 0
            if oldest is not None:
                seg, j = oldest
                age = max(0, int(now - seg.stamps[j]))
            return {
                "records": self._unacked,
                "bytes": self._total_bytes,
                "files": len(self._segments),
                "oldest_unsent_age_s": age,
                "write_faulted": int(self._fault_message is not None),
                **self._counters,
            }

    def sync(self) -> None:
        """Make every appended record durable now (the commit point under fsync="batch")."""
        with self._mutex:
            self._check_open()
            if self._active is not None and self._active.fd is not None:
                try:
                    datasync(self._active.fd)
                except OSError as exc:
                    raise self._write_failed("could not sync the active segment", exc) from exc
            self._unsynced_since = None

    def close(self) -> None:
        """Sync, close files and release the directory lock.  Idempotent.  Raises
        ``SpoolError`` (after releasing everything) if the last cursor could not be written:
        acks since the last write are then lost, and those records are sent again."""
        with self._mutex:
            if self._closed:
                return
            try:
                if self._active is not None and self._policy != "never":
                    try:
                        self._sync_active()
                    except OSError as exc:
                        raise self._write_failed("could not sync on close", exc) from exc
                self._persist()
            finally:
                self._release()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._unacked} pending"
        return f"<Spool {self._dir!r} {state}>"

    # -- writing ---------------------------------------------------------------------------

    def _new_segment(self, first_seq: int) -> Segment:
        name = f"seg-{first_seq:016x}.log"
        try:
            fd = self._root.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        except OSError as exc:
            raise self._write_failed(f"could not create segment {name}", exc) from exc
        try:
            if self._policy != "never":
                self._root.fsync()  # the new name must survive power loss with its data
        except OSError as exc:
            os.close(fd)
            self._doomed.append(name)
            raise self._write_failed(f"could not create segment {name}", exc) from exc
        seg = Segment(name, fd=fd)
        self._segments.append(seg)
        return seg

    def _after_write(self, fd: int) -> None:
        if self._policy == "always":
            datasync(fd)
        elif self._policy == "batch":
            now = time.monotonic()
            if self._unsynced_since is None:
                self._unsynced_since = now
            if now - self._unsynced_since >= self._batch_interval_s:
                datasync(fd)
                self._unsynced_since = None

    def _sync_active(self) -> None:
        seg = self._active
        if seg is not None and seg.fd is not None and self._unsynced_since is not None:
            datasync(seg.fd)
        self._unsynced_since = None

    def _seal_active(self) -> None:
        seg = self._active
        if seg is None:
            return
        try:
            if self._policy != "never":
                self._sync_active()
        except OSError as exc:
            self._write_failed(f"could not sync {seg.name} while sealing it", exc)
        finally:
            if seg.fd is not None:
                os.close(seg.fd)
            seg.fd = None
            self._active = None
        if not seg.unacked:
            self._drop(seg)

    def _abandon_active(self, seg: Segment) -> None:
        """After a failed write or fsync, cut the partial frame off and stop using the file.

        After a failed fsync the page cache may not match the disk, so we never append to that
        file again; the next append starts a new segment.
        """
        try:
            if seg.fd is not None:
                os.ftruncate(seg.fd, seg.size)
        except OSError as exc:  # the disk is failing (reported by the write); recovery at
            # the next open cuts off whatever part of the frame reached the disk
            log.debug("spool %s: could not cut partial frame off %s: %s", self._dir, seg.name,
                      exc)
        finally:
            if seg.fd is not None:
                os.close(seg.fd)
            seg.fd = None
            self._active = None
            self._unsynced_since = None
        if not seg.seqs:
            self._segments.remove(seg)
            self._doomed.append(seg.name)

    def _write_atomic(self, directory: PrivateDir, name: str, data: bytes) -> None:
        """Replace ``name`` so that a crash leaves the old or the new file, never a mix."""
        directory.replace(name, data, fsync=self._policy != "never")

    def _write_cursor(self) -> None:
        doc = {
            "acked_upto": self._acked_upto,
            "acked_above": ranges(self._acked_above),
            "seq_floor": self._seq_floor,
            "counters": self._counters,
        }
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        data = b"%s %08x\n%s" % (CURSOR_TAG, zlib.crc32(body), body)
        self._write_atomic(self._root, CURSOR, data)

    def _persist(self, *, strict: bool = True) -> None:
        """Write the cursor if it changed, then unlink segments it no longer needs.

        Unlinking after the cursor means a crash in between only leaves an acked segment to be
        deleted at the next start.  If the cursor cannot be written (disk full) the segments are
        unlinked anyway: their records are acked or evicted, and freeing space is what unblocks
        the next cursor write.  The failure raises ``SpoolError`` when ``strict``; otherwise
        (reads: ``pending``, ``newest``, ``stats``) it is noted in ``fault`` and retried by
        the next write.
        """
        error: OSError | None = None
        wrote = False
        try:
            # sinks first: a crash in between leaves a sink ahead of the spool, not behind
            wrote = self._persist_sinks()
            if self._dirty:
                self._write_cursor()
                self._dirty = False
                wrote = True
        except OSError as exc:
            error = exc
        if wrote:
            self._wrote()
        doomed, self._doomed = self._doomed, []
        for name in doomed:
            try:
                self._root.remove(name)
            except OSError:
                self._doomed.append(name)  # a read-only disk: tried again with the next write
            except SpoolPermissionError as exc:  # replaced by something that is not ours
                log.error("spool %s: left %s alone: %s", self._dir, name, exc)
        if error is not None:
            failure = self._write_failed("could not write the cursor", error)
            if strict:
                raise failure from error

    def _release(self) -> None:
        self._closed = True
        if self._active is not None and self._active.fd is not None:
            try:
                os.close(self._active.fd)
            except OSError:
                pass
            self._active.fd = None
        self._active = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        for name in ("_quarantine", "_dead", "_root"):
            directory = getattr(self, name, None)
            if directory is not None:
                directory.close()


_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)  # the directory cannot be a spool
