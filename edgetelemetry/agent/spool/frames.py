"""The spool's on-disk frame: magic, payload length, seq, wall timestamp, payload CRC, then a CRC
of those 28 bytes, then the payload; and the scan that finds every intact frame in a segment.

The header CRC lets recovery test a candidate frame in O(1) while resynchronising, and tells
a torn payload (header intact) from garbage.  Little-endian throughout (docs/spool-format.md).
"""

from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "Frame",
    "Record",
    "Segment",
    "encode_frame",
    "frame_at",
    "header_at",
    "scan",
]

FRAME_MAGIC = b"ETr1"
HEAD = struct.Struct("<4sIQdI")
HCRC = struct.Struct("<I")
FRAME_HEADER_SIZE = HEAD.size + HCRC.size  # 32


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


def header_at(data: memoryview, pos: int) -> tuple[int, int, float, int] | None:
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


def frame_at(data: memoryview, pos: int, after_seq: int) -> Frame | None:
    head = header_at(data, pos)
    if head is None:
        return None
    length, seq, ts, pcrc = head
    start = pos + FRAME_HEADER_SIZE
    # seq must grow: a stale or misplaced frame is damage, never a second copy of a record.
    if seq <= after_seq or start + length > len(data):
        return None
    if zlib.crc32(data[start : start + length]) != pcrc:
        return None
    return Frame(seq, ts, pos, length)


def scan(
    raw: bytes, after_seq: int
) -> tuple[list[Frame], list[tuple[int, int]], bool]:
    """Valid frames, damaged ``[start, end)`` ranges, and whether the last range looks torn.

    After damage the scan resumes at the next offset holding a frame whose header CRC,
    payload CRC and increasing seq all check out, so one bad record costs only itself.
    """
    data = memoryview(raw)
    frames: list[Frame] = []
    damaged: list[tuple[int, int]] = []
    pos, last, n = 0, after_seq, len(data)
    while pos < n:
        frame = frame_at(data, pos, last)
        if frame is not None:
            frames.append(frame)
            last = frame.seq
            pos += FRAME_HEADER_SIZE + frame.length
            continue
        nxt = raw.find(FRAME_MAGIC, pos + 1)
        while nxt != -1 and frame_at(data, nxt, last) is None:
            nxt = raw.find(FRAME_MAGIC, nxt + 1)
        end = n if nxt == -1 else nxt
        damaged.append((pos, end))
        pos = end
    torn = False
    if damaged and damaged[-1][1] == n:
        start = damaged[-1][0]
        rest = n - start
        head = header_at(data, start)
        torn = (
            rest < FRAME_HEADER_SIZE  # a partial header
            or (head is not None and start + FRAME_HEADER_SIZE + head[0] > n)  # short payload
            or raw.count(b"\0", start) == rest  # zero-filled blocks of a lost file extension
        )
    return frames, damaged, torn
