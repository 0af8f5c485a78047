"""What a spool directory holds: file names, the cursor's tag, the counters it keeps, and the
small checks recovery and the cursor share (docs/spool-format.md)."""

from __future__ import annotations

import errno
import re

from .errors import SpoolPermissionError

__all__ = [
    "COUNTERS",
    "CURSOR",
    "CURSOR_MAX",
    "CURSOR_TAG",
    "DEAD",
    "DEAD_RE",
    "LOCK",
    "MAX_PAYLOAD",
    "QUARANTINE",
    "QUARANTINE_RE",
    "SEGMENT_RE",
    "SPOOL_ID",
    "SPOOL_ID_RE",
    "SEQ_BLOCK",
    "is_uint",
    "ranges",
    "unusable",
]

MAX_PAYLOAD = 0xFFFFFFFF

SEGMENT_RE = re.compile(r"seg-([0-9a-f]{16})\.log")
DEAD_RE = re.compile(r"dl-([0-9a-f]{16})(?:-[a-z0-9-]{1,32})?\.rec")  # -<sink> with several
QUARANTINE_RE = re.compile(r"q-[0-9]{20}-.+\.(bad|unusable)")  # only these are ever trimmed
CURSOR = "cursor"
CURSOR_MAX = 16 << 20  # a larger cursor is damage: it is never read whole
# The spool's identity (docs/spool-format.md): 32 lowercase hex digits, made with the spool and
# kept for its life, so (spool id, seq) names a record even after the directory is recreated.
SPOOL_ID = "spool-id"
SPOOL_ID_RE = re.compile(rb"([0-9a-f]{32})\n?")
CURSOR_TAG = b"edgetelemetry-spool-cursor 1"
LOCK = "lock"
QUARANTINE = "quarantine"
DEAD = "dead"

# Sequence numbers are reserved in blocks recorded in the cursor file, so a number handed out
# and then lost with an unsynced tail (fsync="batch"/"never", power loss) is still never reused.
SEQ_BLOCK = 4096

COUNTERS = (
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
    "write_failures",
)


def unusable(exc: OSError | SpoolPermissionError) -> bool:
    """An entry to move aside rather than open: a symlink, not a regular file, not ours, or a
    file of ours whose mode could not be repaired."""
    return isinstance(exc, SpoolPermissionError) or exc.errno in (errno.EACCES, errno.EPERM)


def ranges(seqs: set[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def is_uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 64
