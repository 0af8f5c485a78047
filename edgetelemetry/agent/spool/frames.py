"""The spool's on-disk frame: magic, payload length, seq, wall timestamp, payload CRC, then a CRC
of those 28 bytes, then the payload; and the scan that finds every intact frame in a segment.

The header CRC lets recovery test a candidate frame in O(1) while resynchronising, and tells
a torn payload (header intact) from garbage.  Little-endian throughout (docs/spool-format.md).
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "BytesSource",
    "FileSource",
    "Frame",
    "Record",
    "Segment",
    "Source",
    "encode_frame",
    "frame_at",
    "header_at",
    "scan",
]

FRAME_MAGIC = b"ETr1"
HEAD = struct.Struct("<4sIQdI")
HCRC = struct.Struct("<I")
FRAME_HEADER_SIZE = HEAD.size + HCRC.size  # 32
CHUNK = 1 << 20  # bytes read at a time while scanning
SEEK_DATA = getattr(os, "SEEK_DATA", 3)  # Linux; elsewhere lseek fails and all is read


class Record(NamedTuple):
    seq: int
    payload: bytes
    timestamp: float  # wall seconds from the spool's clock at append time


class Frame(NamedTuple):
    seq: int
    timestamp: float
    offset: int
    length: int  # payload bytes


@dataclass(eq=False)
class Segment:
    name: str
    size: int = 0
    seqs: array[int] = field(default_factory=lambda: array("Q"))
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    lengths: array[int] = field(default_factory=lambda: array("I"))
    stamps: array[float] = field(default_factory=lambda: array("d"))
    unacked: int = 0
    fd: int | None = None  # write descriptor while this is the active segment


def encode_frame(seq: int, timestamp: float, payload: bytes) -> bytes:
    head = HEAD.pack(FRAME_MAGIC, len(payload), seq, timestamp, zlib.crc32(payload))
    return head + HCRC.pack(zlib.crc32(head)) + payload


def header_at(data: bytes | memoryview, pos: int) -> tuple[int, int, float, int] | None:
    """(length, seq, timestamp, payload crc) if a header with a good CRC starts at ``pos``."""
    if pos + FRAME_HEADER_SIZE > len(data):
        return None
    magic, length, seq, ts, pcrc = HEAD.unpack_from(data, pos)
    if magic != FRAME_MAGIC:
        return None
    (hcrc,) = HCRC.unpack_from(data, pos + HEAD.size)
    if zlib.crc32(data[pos : pos + HEAD.size]) != hcrc:
        return None
    return length, seq, ts, pcrc


class Source:
    """Bytes to scan, read a piece at a time: memory stays bounded whatever the file's size.

    ``data_from(offset)`` is the first offset at or after ``offset`` that may hold a non-zero
    byte: a sparse file's holes are skipped without being read."""

    size: int

    def read(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def data_from(self, offset: int) -> int:
        return offset


class BytesSource(Source):
    def __init__(self, raw: bytes | bytearray | memoryview) -> None:
        self._raw = memoryview(raw)
        self.size = len(self._raw)

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self._raw[offset : offset + n])


class FileSource(Source):
    """A file descriptor (``pread``, ``lseek(SEEK_DATA)``) of ``size`` bytes."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self._fd, n, offset)

    def data_from(self, offset: int) -> int:
        if offset >= self.size:
            return self.size
        try:
            return min(os.lseek(self._fd, offset, SEEK_DATA), self.size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
                return self.size
            return offset  # no SEEK_DATA here: read everything



def frame_at(data: bytes | memoryview | Source, pos: int, after_seq: int) -> Frame | None:
    """The valid frame starting at ``pos`` (both CRCs, seq above ``after_seq``), or None.

    The payload's CRC is computed a chunk at a time, so a header claiming 4 GiB costs reads,
    not memory."""
    src = data if isinstance(data, Source) else BytesSource(data)
    head = header_at(src.read(pos, FRAME_HEADER_SIZE), 0)
    if head is None:
        return None
    length, seq, ts, pcrc = head
    start = pos + FRAME_HEADER_SIZE
    # seq must grow: a stale or misplaced frame is damage, never a second copy of a record.
    if seq <= after_seq or start + length > src.size:
        return None
    crc, off, end = 0, start, start + length
    while off < end:
        chunk = src.read(off, min(CHUNK, end - off))
        if not chunk:
            return None  # the file shrank under us
        crc = zlib.crc32(chunk, crc)
        off += len(chunk)
    if crc != pcrc:
        return None
    return Frame(seq, ts, pos, length)


def _find_magic(src: Source, pos: int) -> int:
    """The next offset at or after ``pos`` where the frame magic starts, or -1."""
    while pos < src.size:
        pos = src.data_from(pos)  # the magic has no zero byte: holes cannot hold it
        if pos >= src.size:
            return -1
        chunk = src.read(pos, CHUNK + len(FRAME_MAGIC) - 1)
        if len(chunk) < len(FRAME_MAGIC):
            return -1
        i = chunk.find(FRAME_MAGIC)
        if i != -1:
            return pos + i
        pos += len(chunk) - len(FRAME_MAGIC) + 1
    return -1


def _all_zero(src: Source, start: int, end: int) -> bool:
    pos = start
    while pos < end:
        pos = src.data_from(pos)
        if pos >= end:
            return True
        chunk = src.read(pos, min(CHUNK, end - pos))
        if not chunk:
            return True
        if chunk.count(0) != len(chunk):
            return False
        pos += len(chunk)
    return True


def scan(
    data: bytes | bytearray | memoryview | Source, after_seq: int
) -> tuple[list[Frame], list[tuple[int, int]], bool]:
    """Valid frames, damaged ``[start, end)`` ranges, and whether the last range looks torn.

    After damage the scan resumes at the next offset holding a frame whose header CRC,
    payload CRC and increasing seq all check out, so one bad record costs only itself.  The
    source is read a chunk at a time (holes of a sparse file skipped), never whole.
    """
    src = data if isinstance(data, Source) else BytesSource(data)
    frames: list[Frame] = []
    damaged: list[tuple[int, int]] = []
    pos, last, n = 0, after_seq, src.size
    while pos < n:
        frame = frame_at(src, pos, last)
        if frame is not None:
            frames.append(frame)
            last = frame.seq
            pos += FRAME_HEADER_SIZE + frame.length
            continue
        nxt = _find_magic(src, pos + 1)
        while nxt != -1 and frame_at(src, nxt, last) is None:
            nxt = _find_magic(src, nxt + 1)
        end = n if nxt == -1 else nxt
        damaged.append((pos, end))
        pos = end
    torn = False
    if damaged and damaged[-1][1] == n:
        start = damaged[-1][0]
        rest = n - start
        head = header_at(src.read(start, FRAME_HEADER_SIZE), 0)
        torn = (
            rest < FRAME_HEADER_SIZE  # a partial header
            or (head is not None and start + FRAME_HEADER_SIZE + head[0] > n)  # short payload
            or _all_zero(src, start, n)  # zero-filled blocks of a lost file extension
        )
    return frames, damaged, torn
