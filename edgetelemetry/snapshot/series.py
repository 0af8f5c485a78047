"""One series' aggregate over a window: exact count/sum/min/max plus a histogram."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import SnapshotFormatError
from .codec import (
    U64_MAX,
    add_count,
    add_counts,
    add_sum,
    expect_counters,
    expect_int,
    expect_map,
    expect_opt_int,
    expect_str,
    from_runs,
    opt,
    to_runs,
)
from .layout import HistogramLayout

__all__ = ["SeriesSnapshot"]


@dataclass(frozen=True)
class SeriesSnapshot:
    """One series' aggregate over a window: exact count/sum/min/max plus a histogram.

    ``count`` counts accepted values; ``rejected`` (NaN, Inf, wrong type) and ``dropped``
    (a record from a signal handler during its own thread's drain, or made after the
    recorder closed) count values that never entered it.  ``coarse`` counts the values (of
    ``count``) placed with octave precision only, in the middle bucket of their octave: the
    recorder's page pool was used up in the window (see ``Recorder(histogram_pages=)``).
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
    coarse: int = 0

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
        """Both windows' aggregates together.  Refuses (ValueError) other names, layouts or
        units, and a count past 2**64 - 1 or a sum past the double range: a result that no
        snapshot could hold is never made."""
        if other.key != self.key:
            raise ValueError(f"cannot merge series {other.key} into {self.key}")
        if other.layout != self.layout:
            raise ValueError("cannot merge series with different histogram layouts")
        if self.unit != other.unit:
            raise ValueError(
                f"series {self.key} has unit {self.unit!r} in one snapshot and "
                f"{other.unit!r} in the other"
            )
        what = f"series {self.key}"
        return replace(
            self,
            count=add_count(self.count, other.count, f"{what} count"),
            sum=add_sum(self.sum, other.sum, f"{what} sum"),
            min=opt(min, self.min, other.min),
            max=opt(max, self.max, other.max),
            first_mono_ns=opt(min, self.first_mono_ns, other.first_mono_ns),
            last_mono_ns=opt(max, self.last_mono_ns, other.last_mono_ns),
            first_wall_ns=opt(min, self.first_wall_ns, other.first_wall_ns),
            last_wall_ns=opt(max, self.last_wall_ns, other.last_wall_ns),
            zero=add_count(self.zero, other.zero, f"{what} zero"),
            pos=add_counts(self.pos, other.pos, f"{what} bucket"),
            neg=add_counts(self.neg, other.neg, f"{what} bucket"),
            rejected=add_counts(self.rejected, other.rejected, f"{what} rejected"),
            dropped=add_counts(self.dropped, other.dropped, f"{what} dropped"),
            coarse=add_count(self.coarse, other.coarse, f"{what} coarse"),
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
            "pos": to_runs(self.pos),
            "neg": to_runs(self.neg),
            "rejected": dict(sorted(self.rejected.items())),
            "dropped": dict(sorted(self.dropped.items())),
            "coarse": self.coarse,
        }

    @classmethod
    def from_dict(cls, raw: Any, layout: HistogramLayout, where: str) -> SeriesSnapshot:
        """Decode one series, refusing (``SnapshotFormatError``) what ``to_dict`` would never
        write: wrong types, non-finite floats, counts outside uint64, times outside int64, a
        histogram whose buckets and zero do not add up to ``count``, ``coarse`` above it."""
        d = expect_map(raw, where)
        model, version, metric = (expect_str(d, k, where) for k in ("model", "version", "metric"))
        optional: dict[str, str | None] = {}
        for key in ("dimension", "unit"):
            value = d.get(key)
            if value is not None and not isinstance(value, str):
                raise SnapshotFormatError(f"{where}.{key} must be a str or nil")
            optional[key] = value
        count = expect_int(d, "count", where, lo=0, hi=U64_MAX)
        total = d.get("sum")
        if not isinstance(total, float) or not math.isfinite(total):
            raise SnapshotFormatError(f"{where}.sum must be a finite float")
        lo_v, hi_v = d.get("min"), d.get("max")
        if count:
            if not (
                isinstance(lo_v, float)
                and isinstance(hi_v, float)
                and math.isfinite(lo_v)
                and math.isfinite(hi_v)
                and lo_v <= hi_v
            ):
                raise SnapshotFormatError(f"{where}.min/max must be finite floats, min <= max")
        elif lo_v is not None or hi_v is not None or total != 0.0:
            raise SnapshotFormatError(f"{where}: an empty series has nil min/max and sum 0.0")
        times = {
            key: expect_opt_int(d, key, where)
            for key in ("first_mono_ns", "last_mono_ns", "first_wall_ns", "last_wall_ns")
        }
        for clock in ("mono", "wall"):
            first, last = times[f"first_{clock}_ns"], times[f"last_{clock}_ns"]
            if first is not None and last is not None and first > last:
                raise SnapshotFormatError(f"{where}.first_{clock}_ns must be <= last_{clock}_ns")
        zero = expect_int(d, "zero", where, lo=0, hi=U64_MAX)
        pos = from_runs(d.get("pos"), layout.buckets_per_sign, f"{where}.pos")
        neg = from_runs(d.get("neg"), layout.buckets_per_sign, f"{where}.neg")
        if zero + sum(pos.values()) + sum(neg.values()) != count:
            raise SnapshotFormatError(f"{where}: zero and the buckets must add up to count")
        rejected = expect_counters(d.get("rejected"), f"{where}.rejected")
        dropped = expect_counters(d.get("dropped"), f"{where}.dropped")
        coarse = 0 if d.get("coarse") is None else expect_int(d, "coarse", where, lo=0, hi=count)
        return cls(
            model=model,
            version=version,
            metric=metric,
            dimension=optional["dimension"],
            unit=optional["unit"],
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
            coarse=coarse,
            **times,
        )
