"""The wire form's helpers: bucket runs, and readers that check a decoded msgpack value's type
and range and raise ``SnapshotFormatError`` naming where it broke; and the merge arithmetic."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SnapshotFormatError

__all__ = [
    "I64_MAX",
    "I64_MIN",
    "U64_MAX",
    "add_count",
    "add_counts",
    "add_sum",
    "expect_counters",
    "expect_int",
    "expect_map",
    "expect_opt_int",
    "expect_str",
    "from_runs",
    "opt",
    "sum_counters",
    "to_runs",
]

# A run of buckets is split where this many zero buckets lie between two non-zero ones.
RUN_GAP = 4

# What msgpack (and the C core) can hold: counts are uint64, times int64.  The decoder refuses
# anything outside, and a merge that would pass U64_MAX refuses (ValueError) instead of
# writing a snapshot that could not be encoded.
U64_MAX = (1 << 64) - 1
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def opt(fn: Any, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


def add_count(a: int, b: int, what: str) -> int:
    """a + b, refusing (ValueError) a total past what a snapshot can hold (2**64 - 1)."""
    total = a + b
    if total > U64_MAX:
        raise ValueError(f"cannot merge: {what} would pass 2**64 - 1 ({a} + {b})")
    return total


def add_sum(a: float, b: float, what: str) -> float:
    """a + b, refusing (ValueError) a sum of finite values that overflows to infinity."""
    total = a + b
    if not math.isfinite(total):
        raise ValueError(f"cannot merge: {what} overflows a double ({a!r} + {b!r})")
    return total


def add_counts(a: Mapping[Any, int], b: Mapping[Any, int], what: str = "a count") -> dict[Any, int]:
    out = dict(a)
    for key, value in b.items():
        out[key] = add_count(out.get(key, 0), value, f"{what} {key!r}")
    return out


def sum_counters(items: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Counters summed over series (a report's total: a Python int, never refused)."""
    out: dict[str, int] = {}
    for counters in items:
        for key, value in counters.items():
            out[key] = out.get(key, 0) + value
    return out


def to_runs(counts: Mapping[int, int]) -> list[list[Any]]:
    """Sparse buckets as ``[[start, [c0, c1, ...]], ...]``: compact for clustered values."""
    runs: list[list[Any]] = []
    for index in sorted(counts):
        value = counts[index]
        if value == 0:
            continue
        if runs:
            start, values = runs[-1]
            gap = index - (start + len(values))
            if gap <= RUN_GAP:
                values.extend([0] * gap)
                values.append(value)
                continue
        runs.append([index, [value]])
    return runs


def from_runs(raw: Any, limit: int, where: str) -> dict[int, int]:
    if not isinstance(raw, list):
        raise SnapshotFormatError(f"{where} must be a list of [start, [counts]] runs")
    out: dict[int, int] = {}
    for run in raw:
        if (
            not isinstance(run, list)
            or len(run) != 2
            or not isinstance(run[0], int)
            or isinstance(run[0], bool)
            or not isinstance(run[1], list)
        ):
            raise SnapshotFormatError(f"{where} must be a list of [start, [counts]] runs")
        start, values = run
        if start < 0 or start + len(values) > limit:
            raise SnapshotFormatError(f"{where} has a bucket index outside 0..{limit - 1}")
        for offset, value in enumerate(values):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
                raise SnapshotFormatError(f"{where} bucket counts must be ints in 0..2**64-1")
            if value:
                index = start + offset
                if index in out:
                    raise SnapshotFormatError(f"{where} lists bucket {index} twice")
                out[index] = value
    return out


def expect_map(raw: Any, where: str) -> dict[str, Any]:
    """A map whose keys are all str: msgpack also has binary keys, which this format never
    writes and a re-encode could not sort beside str ones."""
    if not isinstance(raw, dict):
        raise SnapshotFormatError(f"{where} must be a map, got {type(raw).__name__}")
    for key in raw:
        if not isinstance(key, str):
            raise SnapshotFormatError(f"{where} has a {type(key).__name__} key; keys are str")
    return raw


def expect_str(d: Mapping[str, Any], key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise SnapshotFormatError(f"{where}.{key} must be a str")
    return value


def expect_int(
    d: Mapping[str, Any], key: str, where: str, lo: int | None = None, hi: int | None = None
) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SnapshotFormatError(f"{where}.{key} must be an int")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SnapshotFormatError(f"{where}.{key} = {value} is out of range")
    return value


def expect_opt_int(d: Mapping[str, Any], key: str, where: str) -> int | None:
    """An int64 time, or None."""
    if d.get(key) is None:
        return None
    return expect_int(d, key, where, lo=I64_MIN, hi=I64_MAX)


def expect_counters(raw: Any, where: str) -> dict[str, int]:
    d = expect_map(raw, where)
    for key, value in d.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
            raise SnapshotFormatError(f"{where}.{key} must be an int in 0..2**64-1")
    return dict(d)
