"""Statistics of the bench: quantiles, trimmed means and their confidence intervals.

Standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["median", "quantile", "trimmed_mean", "trimmed_mean_ci"]

def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty sequence."""
    xs = sorted(values)
    if not xs:
        raise ValueError("quantile of nothing")
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)

def trimmed_mean(values: Sequence[float], cut: float = 0.1) -> float:
    """The mean of ``values`` without the lowest and highest ``cut`` of them."""
    xs = sorted(values)
    k = int(len(xs) * cut)
    kept = xs[k:len(xs) - k] or xs
    return sum(kept) / len(kept)

def trimmed_mean_ci(
    values: Sequence[float], cut: float = 0.1, level: float = 0.95
) -> tuple[float, float]:
    """Confidence interval of the ``cut`` trimmed mean (Yuen / Tukey-McLaughlin): its standard
    error is the winsorized standard deviation / ((1 - 2 cut) sqrt(n)), with Student's t on
    n - 2k - 1 degrees of freedom.  O(n log n): fine for thousands of block pairs, where a
    bootstrap in pure Python is not."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("confidence interval of nothing")
    k = int(n * cut)
    centre = trimmed_mean(xs, cut)
    df = n - 2 * k - 1
    if df < 1:
        return centre, centre
    wins = [xs[k]] * k + xs[k:n - k] + [xs[n - k - 1]] * k
    mean_w = sum(wins) / n
    var_w = sum((x - mean_w) ** 2 for x in wins) / (n - 1)
    se = math.sqrt(var_w) / ((1 - 2 * k / n) * math.sqrt(n))
    half = _t_quantile(0.5 + level / 2, df) * se
    return centre - half, centre + half

def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile: Cornish-Fisher expansion around the normal quantile (within 1%
    from 5 degrees of freedom on, which is all the callers use)."""
    z = statistics.NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3
