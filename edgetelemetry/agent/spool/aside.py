"""What the spool sets aside: damaged bytes and unusable entries in ``quarantine/``, each copy
bounded, and the trimming of ``quarantine/`` and ``dead/`` to their byte bounds (``Spool`` is
one class; this is its part that keeps evidence without ever letting it grow).

Only files this spool wrote are ever deleted: names it gives (``q-*.bad``, ``q-*.unusable``,
``dl-*.rec``) that are regular files of this user.  Anything else found there is left alone.
"""

from __future__ import annotations

import logging
import os
import re
import time

from ..._fs import COPY_CHUNK, PrivateDir, write_all
from .errors import SpoolPermissionError
from .fields import SpoolFields
from .frames import BytesSource, Source
from .layout import QUARANTINE_RE

__all__ = ["SpoolAside"]

log = logging.getLogger(__name__)


class SpoolAside(SpoolFields):
    """Quarantine and trimming of a ``Spool`` (a base class: it works on the spool's state)."""

    def _move_aside(self, name: str, why: Exception) -> None:
        """Move an entry we must not open (a symlink, not ours, not a file) into quarantine/:
        the entry itself is renamed, whatever it points to is never touched."""
        log.error("spool %s: %s is unusable (%s); moved to quarantine", self._dir, name, why)
        self._counters["corruption_events"] += 1
        self._counters["quarantined_files"] += 1
        self._root.rename(name, f"q-{time.time_ns():020d}-{name}.unusable", self._quarantine)
        self._dirty = True

    def _quarantine_bytes(self, source: str, offset: int, data: bytes) -> None:
        self._quarantine_range(source, BytesSource(data), 0, len(data), offset)

    def _quarantine_range(self, source: str, src: Source, start: int, end: int,
                          offset: int | None = None) -> None:
        """Copy ``[start, end)`` of ``src`` for forensics, at most ``quarantine_max_bytes`` of
        it (a 1 GiB damaged file is not copied whole), a chunk at a time; failure here is
        counted and logged but never blocks start-up."""
        keep = min(end - start, self._quarantine_max_bytes)
        if keep < end - start:
            log.info("spool %s: keeping the first %d of %d damaged bytes of %s", self._dir,
                     keep, end - start, source)
        where = start if offset is None else offset
        stamp = time.time_ns()
        try:
            for attempt in range(100):
                name = f"q-{stamp + attempt:020d}-{source}@{where}.bad"
                try:
                    fd = self._quarantine.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    continue
                try:
                    pos = start
                    while pos < start + keep:
                        chunk = src.read(pos, min(COPY_CHUNK, start + keep - pos))
                        if not chunk:
                            break
                        write_all(fd, chunk)
                        pos += len(chunk)
                    if self._policy != "never":
                        os.fsync(fd)
                finally:
                    os.close(fd)
                break
            if self._policy != "never":
                self._quarantine.fsync()
            self._trim(self._quarantine, QUARANTINE_RE, self._quarantine_max_bytes)
        except OSError as exc:
            self._write_failed(f"could not quarantine {keep} bytes of {source}", exc)
        except SpoolPermissionError as exc:  # something planted under one of our names
            log.error("spool %s: could not quarantine %d bytes of %s: %s", self._dir, keep,
                      source, exc)
        self._counters["quarantined_files"] += 1
        self._counters["quarantined_bytes"] += keep

    def _trim(self, directory: PrivateDir, pattern: re.Pattern[str], cap: int) -> int:
        """Delete the oldest of our files in ``directory`` (by name) beyond ``cap`` bytes,
        always keeping the newest; return how many went."""
        entries: list[tuple[str, int]] = []
        for name in directory.names():
            if not pattern.fullmatch(name):
                continue
            st = directory.lstat(name)
            if st is not None and directory.problem(name, st) is None:
                entries.append((name, st.st_size))
        entries.sort()
        total = sum(size for _, size in entries)
        dropped = 0
        for name, size in entries[:-1]:
            if total <= cap:
                break
            directory.remove(name)
            total -= size
            dropped += 1
        return dropped
