"""The spool's opening half: lock, sweep, cursor, and the recovery of every segment around
damage (``Spool`` is one class; this is its start-up, kept apart from the steady state).

Damaged data never raises and never blocks start-up: it is salvaged up to (and past) the
damage, the damaged bytes are copied to ``quarantine/`` and the event is counted.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import stat
import time
import zlib

from ..._fs import TMP_SUFFIX, ensure_private_dir, fsync_dir, open_private, write_all
from .errors import SpoolLockedError, SpoolPermissionError
from .fields import SpoolFields
from .frames import FRAME_HEADER_SIZE, Frame, Segment, scan
from .layout import COUNTERS, CURSOR, CURSOR_TAG, LOCK, SEGMENT_RE, is_uint, unusable

__all__ = ["SpoolRecovery"]

log = logging.getLogger(__name__)


class SpoolRecovery(SpoolFields):
    """Start-up of a ``Spool`` (a base class: it works on the spool's own state)."""

    def _write_atomic(self, dirpath: str, name: str, data: bytes) -> None:
        raise NotImplementedError

    def _compact(self) -> None:
        raise NotImplementedError

    def _drop(self, seg: Segment) -> None:
        raise NotImplementedError

    def _unlink(self, path: str, *, sync: bool) -> None:
        raise NotImplementedError

    def _evict_by_size(self, incoming: int) -> None:
        raise NotImplementedError

    def _evict_by_age(self, now: float) -> None:
        raise NotImplementedError

    def _persist(self) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        parent = os.path.dirname(self._dir)
        os.makedirs(parent, exist_ok=True)
        existed = os.path.isdir(self._dir)
        ensure_private_dir(self._dir, error=SpoolPermissionError, what="a spool directory")
        fresh = not existed or not os.listdir(self._dir)
        self._take_lock()
        ensure_private_dir(self._qdir, error=SpoolPermissionError, what="a spool directory")
        ensure_private_dir(self._ddir, error=SpoolPermissionError, what="a spool directory")
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
            last.fd = open_private(os.path.join(self._dir, last.name), os.O_WRONLY | os.O_APPEND,
                                   error=SpoolPermissionError)
            self._active = last
        if self._policy != "never":
            fsync_dir(self._dir)  # names a crashed owner created but had not yet synced
        self._compact()
        self._evict_by_size(0)  # the bound may have been lowered since the last run
        self._evict_by_age(self._clock())
        self._persist()

    def _take_lock(self) -> None:
        path = os.path.join(self._dir, LOCK)
        fd = open_private(path, os.O_RDWR | os.O_CREAT, error=SpoolPermissionError)
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
                if entry.name.endswith(TMP_SUFFIX):
                    os.unlink(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_uid != os.geteuid():
                    continue  # not ours to chmod; recovery moves it aside if it is one we read
                if stat.S_IMODE(st.st_mode) != 0o600:
                    log.warning("tightening %s from %o to 600", entry.path, st.st_mode & 0o777)
                    os.chmod(entry.path, 0o600)

    def _load_cursor(self) -> bool:
        path = os.path.join(self._dir, CURSOR)
        try:
            fd = open_private(path, os.O_RDONLY, error=SpoolPermissionError)
        except FileNotFoundError:
            return False
        except (OSError, SpoolPermissionError) as exc:
            if not unusable(exc):
                raise
            self._move_aside(CURSOR, exc)
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
            self._quarantine_bytes(CURSOR, 0, raw)
            os.unlink(path)
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
        names = sorted(n for n in os.listdir(self._dir) if SEGMENT_RE.fullmatch(n))
        last_seq = 0
        for i, name in enumerate(names):
            path = os.path.join(self._dir, name)
            try:
                fd = open_private(path, os.O_RDWR, error=SpoolPermissionError)
            except FileNotFoundError:
                continue
            except (OSError, SpoolPermissionError) as exc:
                if not unusable(exc):
                    raise
                self._move_aside(name, exc)
                continue
            try:
                raw = os.pread(fd, os.fstat(fd).st_size, 0)
                frames, damaged, torn = scan(raw, last_seq)
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
        moved: list[Frame] = []
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
                    fd = open_private(
                        os.path.join(self._qdir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                        error=SpoolPermissionError)
                except FileExistsError:
                    continue
                try:
                    write_all(fd, data)
                    if self._policy != "never":
                        os.fsync(fd)
                finally:
                    os.close(fd)
                break
            if self._policy != "never":
                fsync_dir(self._qdir)
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
