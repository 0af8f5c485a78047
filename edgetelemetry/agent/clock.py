"""Time for the agent: the one owner of the clock offset and of the wall-minus-monotonic bases.

``TimeKeeper`` knows three clocks: the local wall clock, ``CLOCK_MONOTONIC`` (the C core's,
which stamps records) and the endpoint's, learnt from every answer's ``Date``.  It decides which
base stamps a window (``trusted_base_ns``) and keeps the ``SigningOffset`` the sender signs with
in step with it, so the time a window carries and the time a request is signed at come from the
same judgement.  The sender corrects the same offset on a clock-skew answer.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from ..heartbeat import MIN_TIMESTAMP
from ..snapshot import Snapshot

__all__ = ["MIN_WALL_NS", "SigningOffset", "TimeKeeper", "phase", "restamp"]

MIN_WALL_NS = int(MIN_TIMESTAMP.timestamp()) * 1_000_000_000
_DATE_HALF_S = 0.5  # Date is whole seconds: the server's time is in [Date, Date + 1)


class SigningOffset:
    """Seconds added to the local clock when signing: the endpoint's time minus ours.

    One object, shared by the sender (which corrects it from a clock-skew answer) and the
    agent's ``TimeKeeper`` (which sets it from the trusted time).  Thread-safe."""

    def __init__(self, seconds: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._seconds = float(seconds)

    def get(self) -> float:
        with self._lock:
            return self._seconds

    def set(self, seconds: float) -> float:
        """Set it; returns the previous value."""
        with self._lock:
            old, self._seconds = self._seconds, float(seconds)
            return old


class TimeKeeper:
    """Wall-minus-monotonic bases in ns.  ``CLOCK_MONOTONIC`` (the C core's clock) pairs with
    wall readings; the injected ``monotonic`` only detects jumps (and schedules, elsewhere)."""

    def __init__(self, clock: Callable[[], float], monotonic: Callable[[], float],
                 tolerance_s: float, jump_threshold_s: float) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._tolerance_ns = int(tolerance_s * 1e9)
        self._jump_s = jump_threshold_s
        self._server_base_ns: int | None = None
        self._last_obs: float | None = None

    @property
    def tolerance_ns(self) -> int:
        """How far a window's wall time may be from the trusted one before it is re-stamped."""
        return self._tolerance_ns

    def local_base_ns(self) -> tuple[int, bool]:
        """(wall - CLOCK_MONOTONIC in ns, whether the wall clock is set, i.e. >= 2020)."""
        wall = self._clock()
        base = int(wall * 1e9) - time.monotonic_ns()
        return base, wall * 1e9 >= MIN_WALL_NS

    def observe(self) -> tuple[bool, float | None]:
        """Once a tick: (clock unset, the jump in seconds if wall - monotonic moved)."""
        wall, mono = self._clock(), self._monotonic()
        obs = wall - mono
        jump = None
        if self._last_obs is not None and abs(obs - self._last_obs) > self._jump_s:
            jump = obs - self._last_obs
        self._last_obs = obs
        return wall * 1e9 < MIN_WALL_NS, jump

    def learn(self, server_time: float | None) -> None:
        if server_time is None or server_time * 1e9 < MIN_WALL_NS:
            return
        self._server_base_ns = int((server_time + _DATE_HALF_S) * 1e9) - time.monotonic_ns()

    @property
    def server_known(self) -> bool:
        return self._server_base_ns is not None

    def trusted_base_ns(self) -> int | None:
        local, is_set = self.local_base_ns()
        server = self._server_base_ns
        if server is not None:
            if is_set and abs(local - server) <= self._tolerance_ns:
                return local  # finer than a whole-second Date
            return server
        return local if is_set else None

    def trusted_now(self) -> float | None:
        base = self.trusted_base_ns()
        return None if base is None else (time.monotonic_ns() + base) / 1e9

    def sync(self, offset: SigningOffset) -> None:
        """Sign with the clock we stamp with: the endpoint's when ours disagrees with it."""
        base = self.trusted_base_ns()
        if base is None:
            return
        seconds = (base - self.local_base_ns()[0]) / 1e9
        if abs(seconds - offset.get()) > 1.0:
            offset.set(seconds)


def restamp(snap: Snapshot, base_ns: int) -> Snapshot:
    """``snap`` with every wall time set to its monotonic time + ``base_ns``."""

    def wall(mono: int | None) -> int | None:
        return None if mono is None else mono + base_ns

    series = tuple(
        replace(s, first_wall_ns=wall(s.first_mono_ns), last_wall_ns=wall(s.last_mono_ns))
        for s in snap.series
    )
    return replace(snap, start_wall_ns=snap.start_mono_ns + base_ns,
                   end_wall_ns=snap.end_mono_ns + base_ns, series=series)


def phase(device: str, fleet: str) -> float:
    """A fraction in [0, 1) fixed per device: where in each interval it reports."""
    digest = hashlib.sha256(f"{fleet}\0{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
