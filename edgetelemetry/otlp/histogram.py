"""Our log2-mantissa histogram on OTLP's base-2 exponential scale: which bucket goes where, and
how far that is from exact.  Pure integer arithmetic on the layout's edges, no float guesswork.

Our layout (``HistogramLayout``): a magnitude in octave ``e`` lies in sub-bucket ``j`` when its
top ``B`` mantissa bits (``B = mantissa_bits``, 12) are in ``[E_j, E_(j+1))``, with
``E_j = ceil((2**(j/K) - 1) * 2**B)``: bucket ``j`` is ``[2**e * (1 + E_j/2**B),
2**e * (1 + E_(j+1)/2**B))``, closed below.  OTLP's bucket ``i`` at scale ``s`` is
``(2**(i/2**s), 2**((i+1)/2**s)]``, closed above.

- At a scale ``s <= v2(K)`` (``K = m * 2**v`` with ``m`` odd) every OTLP bound ``2**(i/2**s)``
  is one of our ideal bounds ``2**(j/K)`` (``j = i*m*2**(v-s)``), so each OTLP bucket is a union
  of ``K/2**s`` whole buckets of ours (1:1 when ``K == 2**s``).  Our real edge is that ideal
  bound rounded up to the next mantissa step, so the values of the one step that straddles a
  bound, at most ``2**-B`` of an octave's base above it, are counted one bucket low; and a
  value exactly at a power of two one bucket high (closed below vs closed above).  We call this
  *aligned*: exact but for those two kinds of values, each at most one ``2**-B`` step from the
  bucket it is counted in.
- At a finer scale each of our buckets goes whole into the OTLP bucket that holds its
  representative (the value ``SeriesSnapshot.quantile`` reports for it), so a value can sit
  up to about one of our buckets outside the OTLP bucket it is counted in.  ``bound_error`` and
  ``midpoint_error`` say how far, exactly, for the layout and scale.

``auto_scale`` picks ``ceil(log2 K)``: 1:1 for a power-of-two ``K``, and otherwise the coarsest
scale whose buckets are no wider than ours (the default ``K = 36`` maps to scale 6, within
1.52% at a bucket's midpoint against our own 0.97%).  See ``docs/otlp.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from ..snapshot import HistogramLayout

__all__ = [
    "MAX_SCALE",
    "MIN_SCALE",
    "ExponentialMapping",
    "aligned_scale",
    "auto_scale",
    "exponential_mapping",
]

MIN_SCALE = 0  # one OTLP bucket per octave; coarser scales only lose resolution
MAX_SCALE = 10  # 1024 buckets an octave: finer than any layout we make (K <= 255)


@dataclass(frozen=True)
class ExponentialMapping:
    """Where each bucket of ``layout`` goes at OTLP ``scale``; build with
    ``exponential_mapping(layout, scale)``.

    ``sub_index[j]`` is the OTLP index, within its octave, of our sub-bucket ``j``: our bucket
    ``b`` (octave ``o = b // K``) has OTLP index ``(min_exponent + o) * 2**scale +
    sub_index[b % K]``.  ``aligned``: every OTLP bound of the scale is one of our edges (up to
    the mantissa step, see the module docstring).  ``bound_error``: the largest relative
    distance between a value in the layout's range and the farther bound of the OTLP bucket it
    is counted in, so any estimate a consumer takes inside that bucket is within it.
    ``midpoint_error``: the same for the bucket's log midpoint ``2**((i + 0.5) / 2**scale)``.
    """

    layout: HistogramLayout
    scale: int
    sub_index: tuple[int, ...]
    aligned: bool
    bound_error: float
    midpoint_error: float

    @property
    def zero_threshold(self) -> float:
        """Magnitudes below this are in our zero bucket (OTLP's zero region)."""
        return self.layout.lowest

    def index(self, bucket: int) -> int:
        octave, sub = divmod(bucket, self.layout.buckets_per_octave)
        return ((self.layout.min_exponent + octave) << self.scale) + self.sub_index[sub]

    def dense(self, counts: Mapping[int, int]) -> tuple[int, list[int]]:
        """``(offset, bucket_counts)`` of OTLP's dense bucket array for our sparse ``counts``
        (bucket index -> count); ``(0, [])`` when empty.  Buckets mapped together add."""
        if not counts:
            return 0, []
        placed: dict[int, int] = {}
        for bucket, n in counts.items():
            if n:
                i = self.index(bucket)
                placed[i] = placed.get(i, 0) + n
        if not placed:
            return 0, []
        lo, hi = min(placed), max(placed)
        dense = [0] * (hi - lo + 1)
        for i, n in placed.items():
            dense[i - lo] = n
        return lo, dense

    def bounds(self, index: int) -> tuple[float, float]:
        """OTLP bucket ``index``'s ``(lower, upper]`` bounds."""
        width = 1 << self.scale
        return math.ldexp(2.0 ** ((index % width) / width), index // width), \
            math.ldexp(2.0 ** ((index % width + 1) / width), index // width)

    def midpoint(self, index: int) -> float:
        width = 1 << self.scale
        return math.ldexp(2.0 ** ((index % width + 0.5) / width), index // width)


def auto_scale(layout: HistogramLayout) -> int:
    """``ceil(log2 K)``: 1:1 for a power-of-two ``K``, else the coarsest scale whose buckets are
    no wider than ours."""
    return min(MAX_SCALE, max(MIN_SCALE, (layout.buckets_per_octave - 1).bit_length()))


def aligned_scale(layout: HistogramLayout) -> int:
    """The finest scale at which every OTLP bucket is a union of whole buckets of ours."""
    for scale in range(min(MAX_SCALE, auto_scale(layout)), MIN_SCALE - 1, -1):
        if exponential_mapping(layout, scale).aligned:
            return scale
    return MIN_SCALE


@lru_cache(maxsize=32)
def exponential_mapping(layout: HistogramLayout, scale: int) -> ExponentialMapping:
    """The mapping of ``layout``'s buckets at OTLP ``scale`` (``MIN_SCALE``..``MAX_SCALE``)."""
    if not isinstance(scale, int) or isinstance(scale, bool) \
            or not MIN_SCALE <= scale <= MAX_SCALE:
        raise ValueError(f"an OTLP scale here is an int from {MIN_SCALE} to {MAX_SCALE}, "
                         f"not {scale!r}")
    one = 1 << layout.mantissa_bits  # the mantissa step count of an octave
    width = 1 << scale
    steps = [one + e for e in layout.edges]  # edge j as 1 + E_j/2**B, times 2**B
    sub_index = []
    for lo, hi in zip(steps, steps[1:]):
        # representative 2ab/(a+b) / 2**B, placed exactly: the i with 2**(i/w) < r <= 2**((i+1)/w)
        num, den = 2 * lo * hi, (lo + hi) * one
        sub_index.append(_otlp_sub_index(num, den, width))
    ours = set(steps)
    aligned = all(_rounded_bound(i, width, layout.mantissa_bits) in ours for i in range(1, width))
    bound_err = mid_err = 0.0
    for j, t in enumerate(sub_index):
        lo_v, hi_v = steps[j] / one, steps[j + 1] / one
        b_lo, b_hi = 2.0 ** (t / width), 2.0 ** ((t + 1) / width)
        mid = 2.0 ** ((t + 0.5) / width)
        for x in (lo_v, hi_v):  # the distances are largest at the bucket's ends
            bound_err = max(bound_err, abs(b_lo - x) / x, abs(b_hi - x) / x)
            mid_err = max(mid_err, abs(mid - x) / x)
    return ExponentialMapping(layout, scale, tuple(sub_index), aligned, bound_err, mid_err)


def _otlp_sub_index(num: int, den: int, width: int) -> int:
    """The ``i`` in ``[0, width)`` with ``2**(i/width) < num/den <= 2**((i+1)/width)``, for
    ``1 <= num/den < 2``: compares ``(num/den)**width`` with ``2**(i+1)``, in integers."""
    guess = min(width - 1, max(0, math.ceil(math.log2(num / den) * width) - 1))
    power_num: int = num ** width
    power_den: int = den ** width

    def at_or_below(i: int) -> bool:  # num/den <= 2**((i+1)/width)
        return power_num <= power_den << (i + 1)

    while guess > 0 and at_or_below(guess - 1):
        guess -= 1
    while guess < width - 1 and not at_or_below(guess):
        guess += 1
    return guess


def _rounded_bound(i: int, width: int, bits: int) -> int:
    """OTLP's inner bound ``2**(i/width)`` rounded up to the next mantissa step, in steps of
    ``2**-bits`` (so ``2**bits`` stands for 1): the smallest ``S`` with
    ``2**(i + bits*width) <= S**width``, as our edges are made."""
    target = 1 << (i + bits * width)
    step: int = math.ceil(2.0 ** (i / width + bits))

    def power(n: int) -> int:
        result: int = n ** width
        return result

    while power(step) < target:
        step += 1
    while power(step - 1) >= target:
        step -= 1
    return step
