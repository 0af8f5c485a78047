"""The ``Date`` header field (RFC 9110 5.6.7), formatted once a second: every answer carries
one, and ``email.utils.formatdate`` cost each a few microseconds of a worker's CPU."""

from __future__ import annotations

from email.utils import formatdate

__all__ = ["http_date"]

_last: tuple[int, str] = (-1, "")


def http_date(now: float) -> str:
    """``now`` (epoch seconds) as an IMF-fixdate, ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    global _last
    second = int(now)
    cached = _last  # one read: another thread may replace it meanwhile, never half of it
    if cached[0] != second:
        cached = _last = (second, formatdate(second, usegmt=True))
    return cached[1]
