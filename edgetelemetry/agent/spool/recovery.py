"""The spool's opening half: lock, sweep, identity, cursor, and the recovery of every segment
around damage (``Spool`` is one class; this is its start-up, kept apart from the steady state).

Damaged data never raises and never blocks start-up: it is salvaged up to (and past) the
damage, the damaged bytes are copied to ``quarantine/`` (a bounded amount) and the event is
counted.  Segments are read a chunk at a time, so a huge or sparse file costs reads, never
memory.  A directory that cannot be a spool (a symlink, another owner, a plain file where a
directory belongs, a read-only disk) raises ``SpoolPermissionError`` saying what and where.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import zlib

from ..._fs import COPY_CHUNK, TMP_SUFFIX, PrivateDir, write_all
from .aside import SpoolAside
from .errors import SpoolLockedError, SpoolPermissionError
from .frames import FRAME_HEADER_SIZE, FileSource, Frame, Segment, scan
from .layout import (
    COUNTERS,
    CURSOR,
    CURSOR_MAX,
    CURSOR_TAG,
    DEAD,
    LOCK,
    QUARANTINE,
    SEGMENT_RE,
    SPOOL_ID,
    SPOOL_ID_RE,
    is_uint,
    unusable,
)

__all__ = ["SpoolRecovery"]

log = logging.getLogger(__name__)


class SpoolRecovery(SpoolAside):
    """Start-up of a ``Spool`` (a base class: it works on the spool's own state)."""

    def _write_atomic(self, directory: PrivateDir, name: str, data: bytes) -> None:
        raise NotImplementedError

    def _compact(self) -> None:
        raise NotImplementedError

    def _drop(self, seg: Segment) -> None:
        raise NotImplementedError

    def _evict_by_size(self, incoming: int) -> None:
        raise NotImplementedError

    def _evict_by_age(self, now: float) -> None:
        raise NotImplementedError

    def _persist(self, *, strict: bool = True) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        root = PrivateDir.open(self._dir, error=SpoolPermissionError,
                               what="the spool directory")
        assert root is not None  # created when missing
        self._root = root
        fresh = not root.names()
        self._take_lock()
        self._quarantine = self._subdir(QUARANTINE, "the spool's quarantine directory")
        self._dead = self._subdir(DEAD, "the spool's dead-letter directory")
        for d in (root, self._quarantine, self._dead):
            self._sweep_dir(d)
        loaded = self._load_cursor()  # first: it holds the counters
        self._spool_id = self._load_spool_id()
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
            last.fd = root.open_file(last.name, os.O_WRONLY | os.O_APPEND)
            self._active = last
        if self._policy != "never":
            root.fsync()  # names a crashed owner created but had not yet synced
        self._compact()
        self._evict_by_size(0)  # the bound may have been lowered since the last run
        self._evict_by_age(self._clock())
        self._persist()

    def _subdir(self, name: str, what: str) -> PrivateDir:
        d = self._root.child(name, what=what)
        assert d is not None  # created when missing
        return d

    def _take_lock(self) -> None:
        fd = self._root.open_file(LOCK, os.O_RDWR | os.O_CREAT)
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
        self._lock_fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _sweep_dir(self, d: PrivateDir) -> None:
        """Drop temp files of interrupted atomic writes; tighten files that are too open.
        Only regular files of this user are touched; anything else is left as it is."""
        for name in d.names():
            st = d.lstat(name)
            if st is None or d.problem(name, st) is not None:
                continue
            if name.endswith(TMP_SUFFIX):
                d.remove(name)
            elif st.st_mode & 0o777 != 0o600:
                os.close(d.open_file(name, os.O_RDONLY))  # opening it makes it 0600

    def _load_spool_id(self) -> str:
        """The spool's identity, made (and kept) when it is missing or damaged."""
        try:
            raw: bytes | None = self._root.read(SPOOL_ID, 64)
        except FileNotFoundError:
            raw = None
        except SpoolPermissionError as exc:
            self._move_aside(SPOOL_ID, exc)
            raw = None
        match = SPOOL_ID_RE.fullmatch(raw) if raw is not None else None
        if match is not None:
            return match.group(1).decode()
        if raw is not None:
            log.error("spool %s: its identity file is damaged; quarantined, a new one made",
                      self._dir)
            self._counters["corruption_events"] += 1
            self._quarantine_bytes(SPOOL_ID, 0, raw)
        spool_id = secrets.token_hex(16)
        self._write_atomic(self._root, SPOOL_ID, f"{spool_id}\n".encode())
        return spool_id

    def _load_cursor(self) -> bool:
        try:
            raw = self._root.read(CURSOR, CURSOR_MAX + 1)
        except FileNotFoundError:
            return False
        except (OSError, SpoolPermissionError) as exc:
            if not unusable(exc):
                raise
            self._move_aside(CURSOR, exc)
            return False
        try:
            if len(raw) > CURSOR_MAX:
                raise ValueError(f"larger than {CURSOR_MAX} bytes")
            self._parse_cursor(raw)
            return True
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("spool %s: cursor file unreadable (%s); quarantined", self._dir, exc)
            self._counters["corruption_events"] += 1
            self._quarantine_bytes(CURSOR, 0, raw)
            self._root.remove(CURSOR)
            return False

    def _parse_cursor(self, raw: bytes) -> None:
        head, sep, body = raw.partition(b"\n")
        tag, _, crc = head.rpartition(b" ")
        if not sep or tag != CURSOR_TAG or int(crc, 16) != zlib.crc32(body):
            raise ValueError("bad header or checksum")
        doc = json.loads(body)
        upto, floor, above = doc["acked_upto"], doc["seq_floor"], doc["acked_above"]
        if not (is_uint(upto) and is_uint(floor) and isinstance(above, list)):
            raise ValueError("bad field types")
        acked: set[int] = set()
        for pair in above:
            if not (isinstance(pair, list) and len(pair) == 2 and all(map(is_uint, pair))):
                raise ValueError("bad acked_above range")
            if not upto < pair[0] <= pair[1] or pair[1] - pair[0] > 1 << 24:
                raise ValueError("acked_above range out of bounds")
            acked.update(range(pair[0], pair[1] + 1))
        counters = dict.fromkeys(COUNTERS, 0)
        for key, value in doc["counters"].items():
            if key in counters:
                if not is_uint(value):
                    raise ValueError(f"bad counter {key}")
                counters[key] = value
        self._acked_upto, self._acked_above, self._seq_floor = upto, acked, max(floor, 1)
        self._counters = counters

    def _recover_segments(self) -> int:
        """Index every segment, salvaging around damage; return the highest seq found."""
        names = sorted(n for n in self._root.names() if SEGMENT_RE.fullmatch(n))
        last_seq = 0
        for i, name in enumerate(names):
            try:
                fd = self._root.open_file(name, os.O_RDWR)
            except FileNotFoundError:
                continue
            except (OSError, SpoolPermissionError) as exc:
                if not unusable(exc):
                    raise
                self._move_aside(name, exc)
                continue
            try:
                src = FileSource(fd, os.fstat(fd).st_size)
                frames, damaged, torn = scan(src, last_seq)
                torn = torn and i == len(names) - 1  # only the newest file can have a torn tail
                if damaged:
                    frames = self._salvage(fd, name, src, frames, damaged, torn)
                elif self._policy != "never":
                    # A crashed owner may have left written but unsynced frames; make what we
                    # are about to rely on durable before building on it.
                    os.fsync(fd)
            finally:
                os.close(fd)
            if not frames:
                self._root.remove(name)
                if self._policy != "never":
                    self._root.fsync()
                continue
            seg = Segment(name)
            for f in frames:
                seg.seqs.append(f.seq)
                seg.offsets.append(f.offset)
                seg.lengths.append(f.length)
                seg.stamps.append(f.timestamp)
            seg.size = frames[-1].offset + FRAME_HEADER_SIZE + frames[-1].length
            self._segments.append(seg)
            last_seq = frames[-1].seq
        return last_seq

    def _salvage(
        self,
        fd: int,
        name: str,
        src: FileSource,
        frames: list[Frame],
        damaged: list[tuple[int, int]],
        torn: bool,
    ) -> list[Frame]:
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
            self._quarantine_range(name, src, start, end)
        self._dirty = True
        if not frames:
            return frames
        if len(damaged) == 1 and damaged[0][1] == src.size:
            # Only the tail is bad: cutting it off keeps every offset, no copy needed.
            os.ftruncate(fd, damaged[0][0])
            if self._policy != "never":
                os.fsync(fd)
            return frames
        # Damage in the middle: copy the good frames, a chunk at a time, to a new file and
        # swap it in atomically.
        tmp = name + TMP_SUFFIX
        out = self._root.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        moved: list[Frame] = []
        pos = 0
        try:
            for f in frames:
                moved.append(f._replace(offset=pos))
                size = FRAME_HEADER_SIZE + f.length
                _copy(src, f.offset, size, out)
                pos += size
            if self._policy != "never":
                os.fsync(out)
        finally:
            os.close(out)
        self._root.rename(tmp, name)
        if self._policy != "never":
            self._root.fsync()
        return moved


def _copy(src: FileSource, offset: int, size: int, out: int) -> None:
    end = offset + size
    while offset < end:
        chunk = src.read(offset, min(COPY_CHUNK, end - offset))
        if not chunk:
            raise OSError(errno.EIO, "segment shrank while being salvaged")
        write_all(out, chunk)
        offset += len(chunk)
