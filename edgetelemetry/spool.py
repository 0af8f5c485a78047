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
import fcntl
import json
import logging
import os
import re
import stat
import struct
import threading
import time
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Literal, NamedTuple, Union

from .errors import EdgeTelemetryError

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

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "batch", "never"]
Payload = Union[bytes, bytearray, memoryview]

# Frame: magic, payload length, seq, wall timestamp, payload CRC, then a CRC of those 28 bytes.
# The header CRC lets recovery test a candidate frame in O(1) while resynchronising, and tells
# a torn payload (header intact) from garbage.  Little-endian throughout.
FRAME_MAGIC = b"ETr1"
_HEAD = struct.Struct("<4sIQdI")
_HCRC = struct.Struct("<I")
FRAME_HEADER_SIZE = _HEAD.size + _HCRC.size  # 32
_MAX_PAYLOAD = 0xFFFFFFFF

_SEGMENT_RE = re.compile(r"seg-([0-9a-f]{16})\.log")
_DEAD_RE = re.compile(r"dl-([0-9a-f]{16})\.rec")
_CURSOR = "cursor"
_CURSOR_TAG = b"edgetelemetry-spool-cursor 1"
_LOCK = "lock"
_QUARANTINE = "quarantine"
_DEAD = "dead"
_TMP_SUFFIX = ".tmp"

# Sequence numbers are reserved in blocks recorded in the cursor file, so a number handed out
# and then lost with an unsynced tail (fsync="batch"/"never", power loss) is still never reused.
_SEQ_BLOCK = 4096

_COUNTERS = (
    "evicted_records",
    "evicted_bytes",
    "evicted_by_size_records",
    "evicted_by_age_records",
    "corruption_events",
    "torn_tails",
    "quarantined_files",
    "quarantined_bytes",
    "dead_letters",
    "dead_letters_dropped",
    "cursor_resets",
)


class SpoolError(EdgeTelemetryError):
    """The spool could not do what was asked (I/O failure, bad state); the message says why."""


class SpoolLockedError(SpoolError):
    """Another process (or another ``Spool`` in this one) already owns the directory."""


class SpoolPermissionError(SpoolError):
    """The directory or a file in it belongs to someone else or is not what it should be."""


class SpoolClosedError(SpoolError):
    """The spool was closed; open a new one."""


class RecordTooLargeError(SpoolError, ValueError):
    """A record that could never fit the spool's byte bound; it was not stored."""


class Record(NamedTuple):
    seq: int
    payload: bytes
    timestamp: float  # wall seconds from the spool's clock at append time


class _Frame(NamedTuple):
    seq: int
    timestamp: float
    offset: int
    length: int  # payload bytes


@dataclass(eq=False)
class _Segment:
    name: str
    size: int = 0
    seqs: array[int] = field(default_factory=lambda: array("Q"))
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    lengths: array[int] = field(default_factory=lambda: array("I"))
    stamps: array[float] = field(default_factory=lambda: array("d"))
    unacked: int = 0
    fd: int | None = None  # write descriptor while this is the active segment


def _encode_frame(seq: int, timestamp: float, payload: bytes) -> bytes:
    head = _HEAD.pack(FRAME_MAGIC, len(payload), seq, timestamp, zlib.crc32(payload))
    return head + _HCRC.pack(zlib.crc32(head)) + payload


def _header_at(data: memoryview, pos: int) -> tuple[int, int, float, int] | None:
    """(length, seq, timestamp, payload crc) if a header with a good CRC starts at ``pos``."""
    if pos + FRAME_HEADER_SIZE > len(data):
        return None
    magic, length, seq, ts, pcrc = _HEAD.unpack_from(data, pos)
    if magic != FRAME_MAGIC:
        return None
    (hcrc,) = _HCRC.unpack_from(data, pos + _HEAD.size)
    if zlib.crc32(data[pos : pos + _HEAD.size]) != hcrc:
        return None
    return length, seq, ts, pcrc


def _frame_at(data: memoryview, pos: int, after_seq: int) -> _Frame | None:
    head = _header_at(data, pos)
    if head is None:
        return None
    length, seq, ts, pcrc = head
    start = pos + FRAME_HEADER_SIZE
    # seq must grow: a stale or misplaced frame is damage, never a second copy of a record.
    if seq <= after_seq or start + length > len(data):
        return None
    if zlib.crc32(data[start : start + length]) != pcrc:
        return None
    return _Frame(seq, ts, pos, length)


def _scan(
    raw: bytes, after_seq: int
) -> tuple[list[_Frame], list[tuple[int, int]], bool]:
    """Valid frames, damaged ``[start, end)`` ranges, and whether the last range looks torn.

    After damage the scan resumes at the next offset holding a frame whose header CRC,
    payload CRC and increasing seq all check out, so one bad record costs only itself.
    """
    data = memoryview(raw)
    frames: list[_Frame] = []
    damaged: list[tuple[int, int]] = []
    pos, last, n = 0, after_seq, len(data)
    while pos < n:
        frame = _frame_at(data, pos, last)
        if frame is not None:
            frames.append(frame)
            last = frame.seq
            pos += FRAME_HEADER_SIZE + frame.length
            continue
        nxt = raw.find(FRAME_MAGIC, pos + 1)
        while nxt != -1 and _frame_at(data, nxt, last) is None:
            nxt = raw.find(FRAME_MAGIC, nxt + 1)
        end = n if nxt == -1 else nxt
        damaged.append((pos, end))
        pos = end
    torn = False
    if damaged and damaged[-1][1] == n:
        start = damaged[-1][0]
        rest = n - start
        head = _header_at(data, start)
        torn = (
            rest < FRAME_HEADER_SIZE  # a partial header
            or (head is not None and start + FRAME_HEADER_SIZE + head[0] > n)  # short payload
            or raw.count(b"\0", start) == rest  # zero-filled blocks of a lost file extension
        )
    return frames, damaged, torn


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _datasync(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_private(path: str, flags: int) -> int:
    """Open a file we own, mode exactly 0600 whatever the umask; never through a symlink."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpoolPermissionError(f"{path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise SpoolPermissionError(
                f"{path} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()})"
            )
        if stat.S_IMODE(st.st_mode) != 0o600:
            if stat.S_IMODE(st.st_mode) & 0o077:
                log.warning("tightening %s from %o to 600", path, stat.S_IMODE(st.st_mode))
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _ensure_private_dir(path: str) -> None:
    """Create ``path`` mode 0700, or check an existing one is ours and tighten it to 0700."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise SpoolPermissionError(f"{path} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise SpoolPermissionError(
            f"{path} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()}); "
            "a spool directory must be private to its owner"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        if stat.S_IMODE(st.st_mode) & 0o077:
            log.warning("tightening %s from %o to 700", path, stat.S_IMODE(st.st_mode))
        os.chmod(path, 0o700)


def _unusable(exc: OSError | SpoolPermissionError) -> bool:
    """An entry to move aside rather than open: a symlink, not a regular file, not ours."""
    return isinstance(exc, SpoolPermissionError) or exc.errno in (
        errno.ELOOP,
        errno.EISDIR,
        errno.ENXIO,
        errno.EACCES,
        errno.EPERM,
    )


def _ranges(seqs: set[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def _is_uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 64


class Spool:
    """A directory of append-only segment files plus a cursor; see the module docstring.

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
    ) -> None:
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
        self._qdir = os.path.join(self._dir, _QUARANTINE)
        self._ddir = os.path.join(self._dir, _DEAD)
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

        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._unsynced_since: float | None = None  # monotonic time of the first unsynced write
        self._total_bytes = 0
        self._unacked = 0
        self._acked_upto = 0
        self._acked_above: set[int] = set()
        self._next_seq = 1
        self._seq_floor = 1  # durable: every seq ever issued is below this
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._dirty = False
        self._doomed: list[str] = []  # segment paths to unlink once the cursor is written
        self._lock_fd: int | None = None
        self._closed = False
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # -- public API ------------------------------------------------------------------------

    @property
    def directory(self) -> str:
        return self._dir

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
            if len(payload) > _MAX_PAYLOAD or size > self._max_bytes:
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
                self._seq_floor = seq + _SEQ_BLOCK
                self._dirty = True
            self._persist()
            if self._active is None:
                self._active = self._new_segment(seq)
            seg = self._active
            assert seg.fd is not None
            self._next_seq = seq + 1  # consumed even on failure: a partial frame may survive
            frame = _encode_frame(seq, now, payload)
            try:
                _write_all(seg.fd, frame)
                self._after_write(seg.fd)
            except OSError as exc:
                self._abandon_active(seg)
                raise SpoolError(f"could not write record {seq} to {seg.name}: {exc}") from exc
            seg.seqs.append(seq)
            seg.offsets.append(seg.size)
            seg.lengths.append(len(payload))
            seg.stamps.append(now)
            seg.size += size
            seg.unacked += 1
            self._total_bytes += size
            self._unacked += 1
            return seq

    def pending(self, limit: int | None = None) -> list[Record]:
        """Unacknowledged records, oldest first (at most ``limit``)."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        with self._mutex:
            self._check_open()
            self._evict_by_age(self._clock())
            with closing(self._unacked_records(newest_first=False)) as records:
                out = list(islice(records, limit))
            self._compact()
            self._persist()
            return out

    def newest(self) -> Record | None:
        """The newest unacknowledged record: what to send first after an outage."""
        with self._mutex:
            self._check_open()
            self._evict_by_age(self._clock())
            with closing(self._unacked_records(newest_first=True)) as records:
                found = next(records, None)
            self._compact()
            self._persist()
            return found

    def ack(self, seq: int) -> bool:
        """Mark one record delivered, durably; True if it was pending.

        Acks may come in any order (newest first, then the backlog).  Acking a record that
        is already acked, evicted or dead-lettered is a no-op; one never issued is a
        ``ValueError``.  If the cursor cannot be written this raises ``SpoolError``; the ack
        is kept in memory and written with the next cursor write.
        """
        with self._mutex:
            where = self._pending_location(seq)
            if where is None:
                return False
            self._mark(where[0], seq)
            self._compact()
            self._persist()
            return True

    def _pending_location(self, seq: int) -> tuple[_Segment, int] | None:
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

    def dead_letter(self, seq: int, reason: str) -> bool:
        """Move a pending record that can never be delivered to ``dead/`` and ack it.

        Returns False if the record is no longer pending (acked or evicted meanwhile).
        """
        with self._mutex:
            where = self._pending_location(seq)
            if where is None:
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
            meta = {
                "seq": seq,
                "timestamp": rec.timestamp,
                "dead_lettered_at": self._clock(),
                "reason": str(reason),
            }
            line = json.dumps(meta, sort_keys=True).encode() + b"\n"
            try:
                self._write_atomic(self._ddir, f"dl-{seq:016x}.rec", line + rec.payload)
            except OSError as exc:
                raise SpoolError(f"could not dead-letter record {seq}: {exc}") from exc
            log.warning("dead-lettered record %d: %s", seq, reason)
            self._counters["dead_letters"] += 1
            self._mark(seg, seq)
            try:
                self._counters["dead_letters_dropped"] += self._trim(
                    self._ddir, _DEAD_RE, self._dead_max_bytes
                )
            except OSError as exc:
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
            self._persist()
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
                **self._counters,
            }

    def sync(self) -> None:
        """Make every appended record durable now (the commit point under fsync="batch")."""
        with self._mutex:
            self._check_open()
            if self._active is not None and self._active.fd is not None:
                _datasync(self._active.fd)
            self._unsynced_since = None

    def close(self) -> None:
        """Sync, close files and release the directory lock.  Idempotent."""
        with self._mutex:
            if self._closed:
                return
            try:
                if self._active is not None and self._policy != "never":
                    self._sync_active()
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

    # -- opening and recovery --------------------------------------------------------------

    def _open(self) -> None:
        parent = os.path.dirname(self._dir)
        os.makedirs(parent, exist_ok=True)
        existed = os.path.isdir(self._dir)
        _ensure_private_dir(self._dir)
        fresh = not existed or not os.listdir(self._dir)
        self._take_lock()
        _ensure_private_dir(self._qdir)
        _ensure_private_dir(self._ddir)
        for d in (self._dir, self._qdir, self._ddir):
            self._sweep_dir(d)
        loaded = self._load_cursor()
        found_max = self._recover_segments()
        if not loaded:
            self._dirty = True  # a fresh spool gets its cursor at once, so its absence means loss
        if not loaded and not (fresh and not self._segments):
            # Without a cursor, resend everything still here rather than skip anything; start
            # numbering above any seq that may have been issued (wall time in microseconds).
            self._counters["cursor_resets"] += 1
            self._acked_upto, self._acked_above = 0, set()
            self._seq_floor = max(found_max + 1, int(self._clock() * 1_000_000))
            log.warning("spool %s: cursor missing or unreadable; resending all records", self._dir)
        self._next_seq = max(self._seq_floor, found_max + 1, self._acked_upto + 1)
        for seg in self._segments:
            seg.unacked = sum(
                1 for s in seg.seqs if s > self._acked_upto and s not in self._acked_above
            )
            self._unacked += seg.unacked
            self._total_bytes += seg.size
        for seg in [s for s in self._segments if not s.unacked]:
            self._drop(seg)  # fully acked; the cursor already says so
        last = self._segments[-1] if self._segments else None
        if last is not None and last.size < self._segment_bytes:
            last.fd = _open_private(os.path.join(self._dir, last.name), os.O_WRONLY | os.O_APPEND)
            self._active = last
        if self._policy != "never":
            _fsync_dir(self._dir)  # names a crashed owner created but had not yet synced
        self._compact()
        self._evict_by_size(0)  # the bound may have been lowered since the last run
        self._evict_by_age(self._clock())
        self._persist()

    def _take_lock(self) -> None:
        path = os.path.join(self._dir, _LOCK)
        fd = _open_private(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpoolLockedError(
                    f"spool {self._dir} is already open (lock held, last owner pid {holder}); "
                    "a spool has exactly one owner: share the Spool object between threads "
                    "instead of opening it twice"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _sweep_dir(self, path: str) -> None:
        """Drop temp files of interrupted atomic writes; tighten files that are too open."""
        with os.scandir(path) as it:
            for entry in it:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.name.endswith(_TMP_SUFFIX):
                    os.unlink(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_uid != os.geteuid():
                    continue  # not ours to chmod; recovery moves it aside if it is one we read
                if stat.S_IMODE(st.st_mode) != 0o600:
                    log.warning("tightening %s from %o to 600", entry.path, st.st_mode & 0o777)
                    os.chmod(entry.path, 0o600)

    def _load_cursor(self) -> bool:
        path = os.path.join(self._dir, _CURSOR)
        try:
            fd = _open_private(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        except (OSError, SpoolPermissionError) as exc:
            if not _unusable(exc):
                raise
            self._move_aside(_CURSOR, exc)
            return False
        try:
            raw = os.read(fd, os.fstat(fd).st_size + 1)
        finally:
            os.close(fd)
        try:
            self._parse_cursor(raw)
            return True
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("spool %s: cursor file unreadable (%s); quarantined", self._dir, exc)
            self._counters["corruption_events"] += 1
            self._quarantine_bytes(_CURSOR, 0, raw)
            os.unlink(path)
            return False

    def _parse_cursor(self, raw: bytes) -> None:
        head, sep, body = raw.partition(b"\n")
        tag, _, crc = head.rpartition(b" ")
        if not sep or tag != _CURSOR_TAG or int(crc, 16) != zlib.crc32(body):
            raise ValueError("bad header or checksum")
        doc = json.loads(body)
        upto, floor, above = doc["acked_upto"], doc["seq_floor"], doc["acked_above"]
        if not (_is_uint(upto) and _is_uint(floor) and isinstance(above, list)):
            raise ValueError("bad field types")
        acked: set[int] = set()
        for pair in above:
            if not (isinstance(pair, list) and len(pair) == 2 and all(map(_is_uint, pair))):
                raise ValueError("bad acked_above range")
            if not upto < pair[0] <= pair[1] or pair[1] - pair[0] > 1 << 24:
                raise ValueError("acked_above range out of bounds")
            acked.update(range(pair[0], pair[1] + 1))
        counters = dict.fromkeys(_COUNTERS, 0)
        for key, value in doc["counters"].items():
            if key in counters:
                if not _is_uint(value):
                    raise ValueError(f"bad counter {key}")
                counters[key] = value
        self._acked_upto, self._acked_above, self._seq_floor = upto, acked, max(floor, 1)
        self._counters = counters

    def _recover_segments(self) -> int:
        """Index every segment, salvaging around damage; return the highest seq found."""
        names = sorted(n for n in os.listdir(self._dir) if _SEGMENT_RE.fullmatch(n))
        last_seq = 0
        for i, name in enumerate(names):
            path = os.path.join(self._dir, name)
            try:
                fd = _open_private(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            except (OSError, SpoolPermissionError) as exc:
                if not _unusable(exc):
                    raise
                self._move_aside(name, exc)
                continue
            try:
                raw = os.pread(fd, os.fstat(fd).st_size, 0)
                frames, damaged, torn = _scan(raw, last_seq)
                torn = torn and i == len(names) - 1  # only the newest file can have a torn tail
                if damaged:
                    frames = self._salvage(fd, name, raw, frames, damaged, torn)
                elif self._policy != "never":
                    # A crashed owner may have left written but unsynced frames; make what we
                    # are about to rely on durable before building on it.
                    os.fsync(fd)
            finally:
                os.close(fd)
            if not frames:
                self._unlink(path, sync=True)
                continue
            seg = _Segment(name)
            for f in frames:
                seg.seqs.append(f.seq)
                seg.offsets.append(f.offset)
                seg.lengths.append(f.length)
                seg.stamps.append(f.timestamp)
            seg.size = frames[-1].offset + FRAME_HEADER_SIZE + frames[-1].length
            self._segments.append(seg)
            last_seq = frames[-1].seq
        return last_seq

    def _move_aside(self, name: str, why: Exception) -> None:
        """Move an entry we must not open (symlink, not ours, not a file) into quarantine/."""
        log.error("spool %s: %s is unusable (%s); moved to quarantine", self._dir, name, why)
        self._counters["corruption_events"] += 1
        self._counters["quarantined_files"] += 1
        os.rename(
            os.path.join(self._dir, name),
            os.path.join(self._qdir, f"q-{time.time_ns():020d}-{name}.unusable"),
        )
        self._dirty = True

    def _salvage(
        self,
        fd: int,
        name: str,
        raw: bytes,
        frames: list[_Frame],
        damaged: list[tuple[int, int]],
        torn: bool,
    ) -> list[_Frame]:
        """Quarantine the damaged ranges and leave only whole frames in the file."""
        for k, (start, end) in enumerate(damaged):
            is_torn = torn and k == len(damaged) - 1
            self._counters["torn_tails" if is_torn else "corruption_events"] += 1
            log.log(
                logging.INFO if is_torn else logging.ERROR,
                "spool %s: %s in %s at bytes %d-%d; quarantined",
                self._dir,
                "torn tail" if is_torn else "corruption",
                name,
                start,
                end,
            )
            self._quarantine_bytes(name, start, raw[start:end])
        self._dirty = True
        if not frames:
            return frames
        if len(damaged) == 1 and damaged[0][1] == len(raw):
            # Only the tail is bad: cutting it off keeps every offset, no copy needed.
            os.ftruncate(fd, damaged[0][0])
            if self._policy != "never":
                os.fsync(fd)
            return frames
        # Damage in the middle: write the good frames to a new file and swap it in atomically.
        out = bytearray()
        moved: list[_Frame] = []
        for f in frames:
            moved.append(f._replace(offset=len(out)))
            out += raw[f.offset : f.offset + FRAME_HEADER_SIZE + f.length]
        self._write_atomic(self._dir, name, bytes(out))
        return moved

    def _quarantine_bytes(self, source: str, offset: int, data: bytes) -> None:
        """Keep damaged bytes for forensics under a bound; failure here never blocks start-up."""
        stamp = time.time_ns()
        try:
            for attempt in range(100):
                name = f"q-{stamp + attempt:020d}-{source}@{offset}.bad"
                try:
                    fd = _open_private(
                        os.path.join(self._qdir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                    )
                except FileExistsError:
                    continue
                try:
                    _write_all(fd, data)
                    if self._policy != "never":
                        os.fsync(fd)
                finally:
                    os.close(fd)
                break
            if self._policy != "never":
                _fsync_dir(self._qdir)
            self._trim(self._qdir, None, self._quarantine_max_bytes)
        except OSError as exc:
            log.error("spool %s: could not quarantine %d bytes: %s", self._dir, len(data), exc)
        self._counters["quarantined_files"] += 1
        self._counters["quarantined_bytes"] += len(data)

    def _trim(self, path: str, pattern: re.Pattern[str] | None, cap: int) -> int:
        """Delete the oldest files in ``path`` (by name) beyond ``cap`` bytes; keep the newest."""
        entries = sorted(
            (e.name, e.stat(follow_symlinks=False).st_size)
            for e in os.scandir(path)
            if e.is_file(follow_symlinks=False)
            and (pattern is None or pattern.fullmatch(e.name))
        )
        total = sum(size for _, size in entries)
        dropped = 0
        for name, size in entries[:-1]:
            if total <= cap:
                break
            os.unlink(os.path.join(path, name))
            total -= size
            dropped += 1
        return dropped

    # -- writing ---------------------------------------------------------------------------

    def _new_segment(self, first_seq: int) -> _Segment:
        name = f"seg-{first_seq:016x}.log"
        path = os.path.join(self._dir, name)
        try:
            fd = _open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
            if self._policy != "never":
                _fsync_dir(self._dir)  # the new name must survive power loss with its data
        except OSError as exc:
            raise SpoolError(f"could not create segment {path}: {exc}") from exc
        seg = _Segment(name, fd=fd)
        self._segments.append(seg)
        return seg

    def _after_write(self, fd: int) -> None:
        if self._policy == "always":
            _datasync(fd)
        elif self._policy == "batch":
            now = time.monotonic()
            if self._unsynced_since is None:
                self._unsynced_since = now
            if now - self._unsynced_since >= self._batch_interval_s:
                _datasync(fd)
                self._unsynced_since = None

    def _sync_active(self) -> None:
        seg = self._active
        if seg is not None and seg.fd is not None and self._unsynced_since is not None:
            _datasync(seg.fd)
        self._unsynced_since = None

    def _seal_active(self) -> None:
        seg = self._active
        if seg is None:
            return
        try:
            if self._policy != "never":
                self._sync_active()
        except OSError as exc:
            log.error("spool %s: fsync of %s failed while sealing: %s", self._dir, seg.name, exc)
        finally:
            if seg.fd is not None:
                os.close(seg.fd)
            seg.fd = None
            self._active = None
        if not seg.unacked:
            self._drop(seg)

    def _abandon_active(self, seg: _Segment) -> None:
        """After a failed write or fsync, cut the partial frame off and stop using the file.

        After a failed fsync the page cache may not match the disk, so we never append to that
        file again; the next append starts a new segment.
        """
        try:
            if seg.fd is not None:
                os.ftruncate(seg.fd, seg.size)
        except OSError as exc:
            log.error("spool %s: could not cut partial frame off %s: %s", self._dir, seg.name, exc)
        finally:
            if seg.fd is not None:
                os.close(seg.fd)
            seg.fd = None
            self._active = None
            self._unsynced_since = None
        if not seg.seqs:
            self._segments.remove(seg)
            self._doomed.append(os.path.join(self._dir, seg.name))

    def _write_atomic(self, dirpath: str, name: str, data: bytes) -> None:
        """Replace ``dirpath/name`` so that a crash leaves the old or the new file, never a mix."""
        tmp = os.path.join(dirpath, name + _TMP_SUFFIX)
        fd = _open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            _write_all(fd, data)
            if self._policy != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(dirpath, name))
        if self._policy != "never":
            _fsync_dir(dirpath)

    def _write_cursor(self) -> None:
        doc = {
            "acked_upto": self._acked_upto,
            "acked_above": _ranges(self._acked_above),
            "seq_floor": self._seq_floor,
            "counters": self._counters,
        }
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        data = b"%s %08x\n%s" % (_CURSOR_TAG, zlib.crc32(body), body)
        self._write_atomic(self._dir, _CURSOR, data)

    def _persist(self) -> None:
        """Write the cursor if it changed, then unlink segments it no longer needs.

        Unlinking after the cursor means a crash in between only leaves an acked segment to be
        deleted at the next start.  If the cursor cannot be written (disk full) the segments are
        unlinked anyway: their records are acked or evicted, and freeing space is what unblocks
        the next cursor write.
        """
        error: OSError | None = None
        if self._dirty:
            try:
                self._write_cursor()
                self._dirty = False
            except OSError as exc:
                error = exc
        doomed, self._doomed = self._doomed, []
        for path in doomed:
            self._unlink(path, sync=False)
        if error is not None:
            raise SpoolError(f"could not write the spool cursor in {self._dir}: {error}") from error

    def _unlink(self, path: str, *, sync: bool) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if sync and self._policy != "never":
            _fsync_dir(self._dir)

    # -- cursor and bounds -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolClosedError(f"spool {self._dir} is closed")

    def _check_issued(self, seq: int) -> None:
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"sequence numbers are positive ints, not {seq!r}")
        if seq >= self._next_seq:
            raise ValueError(f"sequence number {seq} was never issued by this spool")

    def _locate(self, seq: int) -> tuple[_Segment, int] | None:
        for seg in self._segments:
            if seg.seqs and seg.seqs[0] <= seq <= seg.seqs[-1]:
                j = bisect_left(seg.seqs, seq)
                if seg.seqs[j] == seq:
                    return seg, j
                return None
        return None

    def _mark(self, seg: _Segment, seq: int) -> None:
        """Mark a present, pending record acked (delivered, evicted or dead-lettered)."""
        self._acked_above.add(seq)
        seg.unacked -= 1
        self._unacked -= 1
        self._dirty = True
        if not seg.unacked and seg is not self._active:
            self._drop(seg)

    def _drop(self, seg: _Segment) -> None:
        self._segments.remove(seg)
        self._total_bytes -= seg.size
        self._doomed.append(os.path.join(self._dir, seg.name))

    def _first_unacked(self) -> tuple[_Segment, int] | None:
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

    # -- reading ---------------------------------------------------------------------------

    def _unacked_records(self, newest_first: bool) -> Iterator[Record]:
        """The unacknowledged records that read back intact, oldest or newest first, one
        segment's descriptor open at a time.  A damaged record is quarantined and skipped
        (``_read``), an unreadable segment counted lost (``_open_read``).  The caller holds
        the mutex and closes the generator, which closes the descriptor."""
        segments = list(self._segments)  # _open_read may drop a segment
        for seg in reversed(segments) if newest_first else segments:
            if not seg.unacked:
                continue
            fd = self._open_read(seg)
            if fd is None:
                continue
            try:
                first = bisect_right(seg.seqs, self._acked_upto)
                order = (range(len(seg.seqs) - 1, first - 1, -1) if newest_first
                         else range(first, len(seg.seqs)))
                for j in order:
                    if seg.seqs[j] not in self._acked_above:
                        record = self._read(seg, j, fd)
                        if record is not None:
                            yield record
            finally:
                os.close(fd)

    def _open_read(self, seg: _Segment) -> int | None:
        """A read descriptor, or None if the file vanished (its records are then lost, counted)."""
        try:
            return os.open(
                os.path.join(self._dir, seg.name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            )
        except OSError as exc:
            log.error(
                "spool %s: segment %s unreadable (%s); its records are lost",
                self._dir,
                seg.name,
                exc,
            )
            self._counters["corruption_events"] += 1
            for seq in seg.seqs:
                if seq > self._acked_upto and seq not in self._acked_above:
                    self._acked_above.add(seq)
            self._unacked -= seg.unacked
            seg.unacked = 0
            self._dirty = True
            if seg is self._active:
                self._abandon_active(seg)
            if seg in self._segments:
                self._drop(seg)
            return None

    def _read(self, seg: _Segment, j: int, fd: int) -> Record | None:
        """Read and verify one record; damage found now is quarantined and the record acked."""
        seq, offset, length = seg.seqs[j], seg.offsets[j], seg.lengths[j]
        raw = os.pread(fd, FRAME_HEADER_SIZE + length, offset)
        frame = _frame_at(memoryview(raw), 0, seq - 1)
        if frame is not None and frame.seq == seq and frame.length == length:
            return Record(seq, raw[FRAME_HEADER_SIZE:], frame.timestamp)
        log.error("spool %s: record %d in %s is damaged; quarantined", self._dir, seq, seg.name)
        self._counters["corruption_events"] += 1
        self._quarantine_bytes(seg.name, offset, raw)
        self._mark(seg, seq)
        return None

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
