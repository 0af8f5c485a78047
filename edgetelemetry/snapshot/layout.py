"""Where a value's bucket lies: the histogram layout every series of a snapshot shares."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from ..errors import SnapshotFormatError
from .codec import expect_int, expect_map

__all__ = ["HistogramLayout"]


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
        sub = bisect_right(self.edges, frac_bits) - 1
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
        d = expect_map(raw, "histogram")
        if d.get("scheme") != "log2-mantissa":
            raise SnapshotFormatError(f"histogram.scheme {d.get('scheme')!r} is not known")
        k = expect_int(d, "buckets_per_octave", "histogram", lo=1, hi=4096)
        bits = expect_int(d, "mantissa_bits", "histogram", lo=1, hi=20)
        min_exp = expect_int(d, "min_exponent", "histogram", lo=-1074, hi=1023)
        octaves = expect_int(d, "octaves", "histogram", lo=1, hi=2098)
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
