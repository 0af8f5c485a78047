"""A sink's cursor: what one delivery target has of the spool, and its file's form
(``sink-<name>.cursor``: a tag line with the body's CRC, then JSON, like the spool's cursor)."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from .layout import is_uint, ranges

__all__ = [
    "SINK_COUNTERS",
    "SINK_NAME",
    "SinkCursor",
    "check_sink_names",
    "encode_sink_cursor",
    "parse_sink_cursor",
    "sink_cursor_file",
]

SINK_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
SINK_CURSOR_TAG = b"edgetelemetry-sink-cursor 1"
SINK_COUNTERS = ("delivered", "lost", "dead_letters")


def sink_cursor_file(name: str) -> str:
    return f"sink-{name}.cursor"


@dataclass(eq=False)
class SinkCursor:
    """What one sink has of the spool: acked up to ``acked_upto`` plus ``acked_above``."""

    name: str
    acked_upto: int = 0
    acked_above: set[int] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SINK_COUNTERS, 0))
    unacked: int = 0  # records the spool holds that this sink has not acked
    dirty: bool = False

    def has(self, seq: int) -> bool:
        return seq <= self.acked_upto or seq in self.acked_above


def check_sink_names(names: Iterable[str]) -> tuple[str, ...]:
    out = tuple(names)
    bad = [n for n in out if not isinstance(n, str) or not SINK_NAME.fullmatch(n)]
    if bad or len(set(out)) != len(out):
        raise ValueError(f"sinks must be distinct names of lower-case letters, digits and "
                         f"inner '-', at most 32 characters, not {list(out)!r}")
    return out


def encode_sink_cursor(cursor: SinkCursor) -> bytes:
    doc = {"sink": cursor.name, "acked_upto": cursor.acked_upto,
           "acked_above": ranges(cursor.acked_above), "counters": cursor.counters}
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return b"%s %08x\n%s" % (SINK_CURSOR_TAG, zlib.crc32(body), body)


def parse_sink_cursor(name: str, raw: bytes) -> SinkCursor:
    head, sep, body = raw.partition(b"\n")
    tag, _, crc = head.rpartition(b" ")
    if not sep or tag != SINK_CURSOR_TAG or int(crc, 16) != zlib.crc32(body):
        raise ValueError("bad header or checksum")
    doc = json.loads(body)
    upto, above = doc["acked_upto"], doc["acked_above"]
    if doc["sink"] != name or not is_uint(upto) or not isinstance(above, list):
        raise ValueError("bad fields")
    cursor = SinkCursor(name, upto)
    for pair in above:
        if not (isinstance(pair, list) and len(pair) == 2 and all(map(is_uint, pair))
                and upto < pair[0] <= pair[1] and pair[1] - pair[0] <= 1 << 24):
            raise ValueError("bad acked_above range")
        cursor.acked_above.update(range(pair[0], pair[1] + 1))
    for key, value in doc["counters"].items():
        if key in cursor.counters:
            if not is_uint(value):
                raise ValueError(f"bad counter {key}")
            cursor.counters[key] = value
    return cursor
