"""Snapshots: one closed window of a recorder, as plain data that encodes to msgpack and merges.

The format is documented in ``docs/snapshot-format.md`` and pinned by a golden-file test.
This module is pure Python: it knows nothing of the C core, so snapshots can be decoded,
merged and inspected on any machine (the fleet endpoint, a notebook).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import msgpack

from .errors import SnapshotFormatError

__all__ = [
    "SCHEMA_VERSION",
    "HistogramLayout",
    "SeriesSnapshot",
    "SnapshotSource",
    "Snapshot",
]

SCHEMA_VERSION = (1, 0)

# Recorder figures that describe a state (take the max when merging); the rest are counters.
RECORDER_GAUGES = (
    "memory_bytes",
    "ring_capacity",
    "max_threads",
    "max_series",
    "series",
    "threads_active",
    "ring_high_water",
)

# A run of buckets is split where this many zero buckets lie between two non-zero ones.
_RUN_GAP = 4


@dataclass(frozen=True)
class HistogramLayout:
    """Where a value's bucket lies: log2 octaves split into sub-buckets by mantissa bits.

    A magnitude ``m`` with ``2**min_exponent <= m < 2**(min_exponent + octaves)`` lies in octave
    ``e = floor(log2(m))`` and sub-bucket ``j`` with
    ``edges[j] <= (m / 2**e - 1) * 2**mantissa_bits < edges[j + 1]``; its index is
    ``(e - min_exponent) * buckets_per_octave + j``.  Smaller magnitudes (zero, subnormals) are
    counted in the zero bucket, larger ones in the last bucket.  A bucket is reported as the
    value with the least relative error to both of its edges, ``2*lo*hi/(lo+hi)``.
    """

    buckets_per_octave: int
    mantissa_bits: int
    min_exponent: int
    octaves: int
    edges: tuple[int, ...]

    @property
    def buckets_per_sign(self) -> int:
        return self.buckets_per_octave * self.octaves

    @property
    def relative_error(self) -> float:
        """The largest relative error of any bucket's reported value (inside the range)."""
        scale = 2 << self.mantissa_bits  # 2 * 2**mantissa_bits
        return max(
            (b - a) / (scale + a + b) for a, b in zip(self.edges, self.edges[1:])
        )

    @property
    def lowest(self) -> float:
        return math.ldexp(1.0, self.min_exponent)

    @property
    def highest(self) -> float:
        return math.ldexp(1.0, self.min_exponent + self.octaves)

    def bounds(self, index: int) -> tuple[float, float]:
        """The ``[lo, hi)`` magnitudes of bucket ``index``."""
        octave, sub = divmod(index, self.buckets_per_octave)
        unit = 1 << self.mantissa_bits
        exp = self.min_exponent + octave
        lo = math.ldexp(1.0 + self.edges[sub] / unit, exp)
        hi = math.ldexp(1.0 + self.edges[sub + 1] / unit, exp)
        return lo, hi

    def representative(self, index: int) -> float:
        lo, hi = self.bounds(index)
        return 2.0 * lo * hi / (lo + hi)

    def index_of(self, magnitude: float) -> int | None:
        """The bucket of a positive finite magnitude, or None for the zero bucket."""
        if not magnitude >= self.lowest:
            return None
        if magnitude >= self.highest:
            return self.buckets_per_sign - 1
        mant, exp = math.frexp(magnitude)  # magnitude = mant * 2**exp, 0.5 <= mant < 1
        exp -= 1
        frac_bits = int((mant * 2.0 - 1.0) * (1 << self.mantissa_bits))
        sub = _bisect_right(self.edges, frac_bits) - 1
        return (exp - self.min_exponent) * self.buckets_per_octave + sub

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": "log2-mantissa",
            "buckets_per_octave": self.buckets_per_octave,
            "mantissa_bits": self.mantissa_bits,
            "min_exponent": self.min_exponent,
            "octaves": self.octaves,
            "edges": list(self.edges),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> HistogramLayout:
        d = _expect_map(raw, "histogram")
        if d.get("scheme") != "log2-mantissa":
            raise SnapshotFormatError(f"histogram.scheme {d.get('scheme')!r} is not known")
        k = _expect_int(d, "buckets_per_octave", "histogram", lo=1, hi=4096)
        bits = _expect_int(d, "mantissa_bits", "histogram", lo=1, hi=20)
        min_exp = _expect_int(d, "min_exponent", "histogram", lo=-1074, hi=1023)
        octaves = _expect_int(d, "octaves", "histogram", lo=1, hi=2098)
        edges = d.get("edges")
        if (
            not isinstance(edges, list)
            or len(edges) != k + 1
            or not all(isinstance(e, int) and not isinstance(e, bool) for e in edges)
            or edges[0] != 0
            or edges[-1] != 1 << bits
            or any(a >= b for a, b in zip(edges, edges[1:]))
        ):
            raise SnapshotFormatError(
                "histogram.edges must be buckets_per_octave + 1 increasing ints "
                "from 0 to 2**mantissa_bits"
            )
        if min_exp + octaves > 1024:
            raise SnapshotFormatError("histogram range exceeds the double range")
        return cls(k, bits, min_exp, octaves, tuple(edges))


def _bisect_right(seq: tuple[int, ...], x: int) -> int:
    lo, hi = 0, len(seq)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < seq[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class SeriesSnapshot:
    """One series' aggregate over a window: exact count/sum/min/max plus a histogram.

    ``count`` counts accepted values; ``rejected`` (NaN, Inf, wrong type) and ``dropped``
    (ring full, no ring free, recorder closed) count values that never entered it.
    Record times are attributed at drain granularity (see the recorder's collector period).
    """

    model: str
    version: str
    metric: str
    dimension: str | None
    unit: str | None
    layout: HistogramLayout
    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    first_mono_ns: int | None = None
    last_mono_ns: int | None = None
    first_wall_ns: int | None = None
    last_wall_ns: int | None = None
    zero: int = 0
    pos: Mapping[int, int] = field(default_factory=dict)
    neg: Mapping[int, int] = field(default_factory=dict)
    rejected: Mapping[str, int] = field(default_factory=dict)
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str | None]:
        return (self.model, self.version, self.metric, self.dimension)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    @property
    def relative_error(self) -> float:
        return self.layout.relative_error

    def quantile(self, q: float) -> float | None:
        """The value at rank ``floor(q * (count - 1))``, within ``relative_error`` of the exact
        one for magnitudes inside the layout's range; None for an empty series."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q!r} is outside [0, 1]")
        if self.count == 0:
            return None
        rank = int(q * (self.count - 1))
        if rank == 0:
            return self.min
        if rank == self.count - 1:
            return self.max
        seen = 0
        for index in sorted(self.neg, reverse=True):
            seen += self.neg[index]
            if seen > rank:
                return self._clamp(-self.layout.representative(index))
        seen += self.zero
        if seen > rank:
            return self._clamp(0.0)
        for index in sorted(self.pos):
            seen += self.pos[index]
            if seen > rank:
                return self._clamp(self.layout.representative(index))
        return self.max  # buckets saturated below count: the top is the max

    def _clamp(self, value: float) -> float:
        assert self.min is not None and self.max is not None
        return min(max(value, self.min), self.max)

    def merge(self, other: SeriesSnapshot) -> SeriesSnapshot:
        if other.key != self.key:
            raise ValueError(f"cannot merge series {other.key} into {self.key}")
        if other.layout != self.layout:
            raise ValueError("cannot merge series with different histogram layouts")
        if self.unit != other.unit:
            raise ValueError(
                f"series {self.key} has unit {self.unit!r} in one snapshot and "
                f"{other.unit!r} in the other"
            )
        return replace(
            self,
            count=self.count + other.count,
            sum=self.sum + other.sum,
            min=_opt(min, self.min, other.min),
            max=_opt(max, self.max, other.max),
            first_mono_ns=_opt(min, self.first_mono_ns, other.first_mono_ns),
            last_mono_ns=_opt(max, self.last_mono_ns, other.last_mono_ns),
            first_wall_ns=_opt(min, self.first_wall_ns, other.first_wall_ns),
            last_wall_ns=_opt(max, self.last_wall_ns, other.last_wall_ns),
            zero=self.zero + other.zero,
            pos=_add_counts(self.pos, other.pos),
            neg=_add_counts(self.neg, other.neg),
            rejected=_add_counts(self.rejected, other.rejected),
            dropped=_add_counts(self.dropped, other.dropped),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "metric": self.metric,
            "dimension": self.dimension,
            "unit": self.unit,
            "count": self.count,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "first_mono_ns": self.first_mono_ns,
            "last_mono_ns": self.last_mono_ns,
            "first_wall_ns": self.first_wall_ns,
            "last_wall_ns": self.last_wall_ns,
            "zero": self.zero,
            "pos": _to_runs(self.pos),
            "neg": _to_runs(self.neg),
            "rejected": dict(sorted(self.rejected.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }

    @classmethod
    def from_dict(cls, raw: Any, layout: HistogramLayout, where: str) -> SeriesSnapshot:
        d = _expect_map(raw, where)
        names = {}
        for key in ("model", "version", "metric"):
            names[key] = _expect_str(d, key, where)
        for key in ("dimension", "unit"):
            value = d.get(key)
            if value is not None and not isinstance(value, str):
                raise SnapshotFormatError(f"{where}.{key} must be a str or nil")
            names[key] = value
        count = _expect_int(d, "count", where, lo=0)
        total = d.get("sum")
        if not isinstance(total, float) or not math.isfinite(total):
            raise SnapshotFormatError(f"{where}.sum must be a finite float")
        lo_v, hi_v = d.get("min"), d.get("max")
        if count:
            if not (isinstance(lo_v, float) and isinstance(hi_v, float) and lo_v <= hi_v):
                raise SnapshotFormatError(f"{where}.min/max must be floats with min <= max")
        elif lo_v is not None or hi_v is not None:
            raise SnapshotFormatError(f"{where}: an empty series has nil min/max")
        times = {
            key: _expect_opt_int(d, key, where)
            for key in ("first_mono_ns", "last_mono_ns", "first_wall_ns", "last_wall_ns")
        }
        zero = _expect_int(d, "zero", where, lo=0)
        pos = _from_runs(d.get("pos"), layout.buckets_per_sign, f"{where}.pos")
        neg = _from_runs(d.get("neg"), layout.buckets_per_sign, f"{where}.neg")
        rejected = _expect_counters(d.get("rejected"), f"{where}.rejected")
        dropped = _expect_counters(d.get("dropped"), f"{where}.dropped")
        return cls(
            layout=layout,
            count=count,
            sum=total,
            min=lo_v,
            max=hi_v,
            zero=zero,
            pos=pos,
            neg=neg,
            rejected=rejected,
            dropped=dropped,
            **names,
            **times,
        )


@dataclass(frozen=True)
class SnapshotSource:
    """Which recorder windows a snapshot covers: a merged snapshot lists several."""

    recorder_id: str
    boot_id: str
    seq_first: int
    seq_last: int


@dataclass(frozen=True)
class Snapshot:
    """A closed window (or a merge of several): series aggregates plus the recorder's figures."""

    sources: tuple[SnapshotSource, ...]
    start_mono_ns: int
    end_mono_ns: int
    start_wall_ns: int
    end_wall_ns: int
    layout: HistogramLayout
    series: tuple[SeriesSnapshot, ...]
    recorder: Mapping[str, int] = field(default_factory=dict)
    schema: tuple[int, int] = SCHEMA_VERSION

    @property
    def recorder_id(self) -> str:
        return self.sources[0].recorder_id

    @property
    def seq(self) -> int:
        """The sequence number of the (last) window this snapshot closes."""
        return self.sources[-1].seq_last

    @property
    def dropped(self) -> dict[str, int]:
        return _sum_counters(s.dropped for s in self.series)

    @property
    def rejected(self) -> dict[str, int]:
        return _sum_counters(s.rejected for s in self.series)

    def get(
        self, model: str, version: str, metric: str, dimension: str | None = None
    ) -> SeriesSnapshot | None:
        key = (model, version, metric, dimension)
        for s in self.series:
            if s.key == key:
                return s
        return None

    def merge(self, other: Snapshot) -> Snapshot:
        """The snapshot of both windows together: counts add, min/max widen, buckets add."""
        if other.layout != self.layout:
            raise ValueError("cannot merge snapshots with different histogram layouts")
        merged: dict[tuple[str, str, str, str | None], SeriesSnapshot] = {
            s.key: s for s in self.series
        }
        for s in other.series:
            mine = merged.get(s.key)
            merged[s.key] = s if mine is None else mine.merge(s)
        figures: dict[str, int] = dict(self.recorder)
        for key, value in other.recorder.items():
            if key in RECORDER_GAUGES:
                figures[key] = max(figures.get(key, value), value)
            else:
                figures[key] = figures.get(key, 0) + value
        return Snapshot(
            sources=_merge_sources(self.sources + other.sources),
            start_mono_ns=min(self.start_mono_ns, other.start_mono_ns),
            end_mono_ns=max(self.end_mono_ns, other.end_mono_ns),
            start_wall_ns=min(self.start_wall_ns, other.start_wall_ns),
            end_wall_ns=max(self.end_wall_ns, other.end_wall_ns),
            layout=self.layout,
            series=tuple(sorted(merged.values(), key=_series_order)),
            recorder=figures,
            schema=SCHEMA_VERSION,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": list(SCHEMA_VERSION),
            "sources": [
                [s.recorder_id, s.boot_id, s.seq_first, s.seq_last] for s in self.sources
            ],
            "window": {
                "start_mono_ns": self.start_mono_ns,
                "end_mono_ns": self.end_mono_ns,
                "start_wall_ns": self.start_wall_ns,
                "end_wall_ns": self.end_wall_ns,
            },
            "histogram": self.layout.to_dict(),
            "series": [s.to_dict() for s in self.series],
            "recorder": dict(sorted(self.recorder.items())),
        }

    def to_msgpack(self) -> bytes:
        return msgpack.packb(self.to_dict(), use_bin_type=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> Snapshot:
        """Decode bytes from ``to_msgpack``; anything else raises ``SnapshotFormatError``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SnapshotFormatError(f"expected bytes, got {type(data).__name__}")
        try:
            raw = msgpack.unpackb(
                bytes(data),
                raw=False,
                strict_map_key=True,
            )
        except msgpack.ExtraData as exc:
            raise SnapshotFormatError("trailing bytes after the snapshot") from exc
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise SnapshotFormatError(f"not a msgpack snapshot: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> Snapshot:
        d = _expect_map(raw, "snapshot")
        schema = d.get("schema")
        if (
            not isinstance(schema, list)
            or len(schema) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in schema)
        ):
            raise SnapshotFormatError("snapshot.schema must be [major, minor]")
        if schema[0] != SCHEMA_VERSION[0]:
            raise SnapshotFormatError(
                f"snapshot schema {schema[0]}.{schema[1]} is not readable by this version "
                f"(reads {SCHEMA_VERSION[0]}.x)"
            )
        raw_sources = d.get("sources")
        if not isinstance(raw_sources, list) or not raw_sources:
            raise SnapshotFormatError("snapshot.sources must be a non-empty list")
        sources = []
        for i, src in enumerate(raw_sources):
            if (
                not isinstance(src, list)
                or len(src) != 4
                or not isinstance(src[0], str)
                or not isinstance(src[1], str)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in src[2:])
                or not 0 <= src[2] <= src[3]
            ):
                raise SnapshotFormatError(
                    f"snapshot.sources[{i}] must be [recorder_id, boot_id, seq_first, seq_last]"
                )
            sources.append(SnapshotSource(*src))
        window = _expect_map(d.get("window"), "snapshot.window")
        bounds = {
            key: _expect_int(window, key, "snapshot.window")
            for key in ("start_mono_ns", "end_mono_ns", "start_wall_ns", "end_wall_ns")
        }
        layout = HistogramLayout.from_dict(d.get("histogram"))
        raw_series = d.get("series")
        if not isinstance(raw_series, list):
            raise SnapshotFormatError("snapshot.series must be a list")
        series = tuple(
            SeriesSnapshot.from_dict(s, layout, f"snapshot.series[{i}]")
            for i, s in enumerate(raw_series)
        )
        recorder = _expect_counters(d.get("recorder"), "snapshot.recorder")
        return cls(
            sources=tuple(sources),
            layout=layout,
            series=series,
            recorder=recorder,
            schema=(schema[0], schema[1]),
            **bounds,
        )


def _series_order(s: SeriesSnapshot) -> tuple[str, str, str, str]:
    return (s.model, s.version, s.metric, s.dimension or "")


def _merge_sources(sources: tuple[SnapshotSource, ...]) -> tuple[SnapshotSource, ...]:
    """Join adjacent windows of one recorder into one range; keep the rest in order."""
    out: list[SnapshotSource] = []
    for src in sorted(sources, key=lambda s: (s.recorder_id, s.seq_first)):
        last = out[-1] if out else None
        if (
            last is not None
            and last.recorder_id == src.recorder_id
            and last.boot_id == src.boot_id
            and src.seq_first <= last.seq_last + 1
        ):
            out[-1] = replace(last, seq_last=max(last.seq_last, src.seq_last))
        else:
            out.append(src)
    return tuple(out)


def _opt(fn: Any, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


def _add_counts(a: Mapping[Any, int], b: Mapping[Any, int]) -> dict[Any, int]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value
    return out


def _sum_counters(items: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for counters in items:
        out = _add_counts(out, counters)
    return out


def _to_runs(counts: Mapping[int, int]) -> list[list[Any]]:
    """Sparse buckets as ``[[start, [c0, c1, ...]], ...]``: compact for clustered values."""
    runs: list[list[Any]] = []
    for index in sorted(counts):
        value = counts[index]
        if value == 0:
            continue
        if runs:
            start, values = runs[-1]
            gap = index - (start + len(values))
            if gap <= _RUN_GAP:
                values.extend([0] * gap)
                values.append(value)
                continue
        runs.append([index, [value]])
    return runs


def _from_runs(raw: Any, limit: int, where: str) -> dict[int, int]:
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
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SnapshotFormatError(f"{where} bucket counts must be non-negative ints")
            if value:
                index = start + offset
                if index in out:
                    raise SnapshotFormatError(f"{where} lists bucket {index} twice")
                out[index] = value
    return out


def _expect_map(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SnapshotFormatError(f"{where} must be a map, got {type(raw).__name__}")
    return raw


def _expect_str(d: Mapping[str, Any], key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise SnapshotFormatError(f"{where}.{key} must be a str")
    return value


def _expect_int(
    d: Mapping[str, Any], key: str, where: str, lo: int | None = None, hi: int | None = None
) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SnapshotFormatError(f"{where}.{key} must be an int")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SnapshotFormatError(f"{where}.{key} = {value} is out of range")
    return value


def _expect_opt_int(d: Mapping[str, Any], key: str, where: str) -> int | None:
    if d.get(key) is None:
        return None
    return _expect_int(d, key, where)


def _expect_counters(raw: Any, where: str) -> dict[str, int]:
    d = _expect_map(raw, where)
    for key, value in d.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SnapshotFormatError(f"{where}.{key} must be a non-negative int")
    return dict(d)
