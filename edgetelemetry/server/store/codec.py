"""The compact encoding of a heartbeat's metric values (the ``points`` column of ``heartbeats``).

A heartbeat row holds all its metrics in one blob instead of one row per metric: the names live
once per device in the ``series`` table, and a point refers to its series by the device-local
``number``.  Every point is::

    varint(number << 4 | value_kind << 2 | time_kind)   then the value, then the time

- value_kind 0: no value; 1: an integer (zig-zag varint; exact for |v| < 2**53); 2: a float32
  that round-trips exactly; 3: a float64;
- time_kind 0: the row's ``ts`` (the earliest timestamp of the heartbeat); 1: ``ts`` plus a
  whole number of seconds (varint); 2: the time itself, a float64.

A typical 11-metric heartbeat (one timestamp, float values) takes about 10 bytes a point.
Pure functions, no I/O: tested round-trip against any float, timestamp and number.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Container, Iterator, Sequence

__all__ = ["Point", "decode_points", "encode_points"]

# (series number, value, timestamp)
Point = tuple[int, "float | None", float]

_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_EXACT_INT = 2**53


def _varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_varint(blob: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = blob[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7


def _fits_float32(value: float) -> bool:
    if not math.isfinite(value) or abs(value) > 3.4e38:
        return False
    return bool(_F32.unpack(_F32.pack(value))[0] == value)


def encode_points(points: Sequence[Point], base_ts: float) -> bytes:
    """The blob of ``points`` (each ``ts >= base_ts``) for a row whose ``ts`` is ``base_ts``."""
    out = bytearray()
    for number, value, ts in points:
        if number < 0:
            raise ValueError("series numbers are not negative")
        payload = bytearray()
        if value is None:
            value_kind = 0
        elif (
            value.is_integer()
            and abs(value) < _EXACT_INT
            and not (value == 0 and math.copysign(1.0, value) < 0)
        ):
            value_kind = 1
            i = int(value)
            _varint(payload, i << 1 if i >= 0 else ((-i) << 1) - 1)
        elif _fits_float32(value):
            value_kind = 2
            payload += _F32.pack(value)
        else:
            value_kind = 3
            payload += _F64.pack(value)
        offset = ts - base_ts
        if offset == 0:
            time_kind = 0
        elif offset > 0 and offset.is_integer() and offset < _EXACT_INT:
            time_kind = 1
            _varint(payload, int(offset))
        else:
            time_kind = 2
            payload += _F64.pack(ts)  # absolute: an offset may not round-trip
        _varint(out, number << 4 | value_kind << 2 | time_kind)
        out += payload
    return bytes(out)


def decode_points(
    blob: bytes, base_ts: float, numbers: Container[int] | None = None
) -> Iterator[Point]:
    """The points of a blob, in the order encoded; only those whose number is in ``numbers``
    when given (the others are skipped without being decoded)."""
    pos, end = 0, len(blob)
    while pos < end:
        head, pos = _read_varint(blob, pos)
        number, value_kind, time_kind = head >> 4, (head >> 2) & 3, head & 3
        value: float | None = None
        if value_kind == 1:
            z, pos = _read_varint(blob, pos)
            value = float((z >> 1) if not z & 1 else -((z + 1) >> 1))
        elif value_kind == 2:
            value = _F32.unpack_from(blob, pos)[0]
            pos += 4
        elif value_kind == 3:
            value = _F64.unpack_from(blob, pos)[0]
            pos += 8
        ts = base_ts
        if time_kind == 1:
            offset, pos = _read_varint(blob, pos)
            ts = base_ts + offset
        elif time_kind == 2:
            ts = _F64.unpack_from(blob, pos)[0]
            pos += 8
        elif time_kind == 3:
            raise ValueError("corrupt points blob (time kind 3)")
        if numbers is None or number in numbers:
            yield number, value, ts
