"""The public recording API: ``Recorder`` and its bound metric handles.

    rec = Recorder()
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    lat.record(3.2)              # one C call, never raises
    with lat.time(): ...         # also a decorator, async def included
    per_inference = rec.group(lat, conf, size)
    start = per_inference.start()
    per_inference.record_since(start, 0.93, 150528)   # all of one inference, one C call
    snap = rec.snapshot()        # drains, closes the window
    rec.close()

    rec = Recorder.attach("/run/edgetelemetry/recorder")   # the device agent's recorder
    ...                          # the same handles and calls; the agent closes the windows

A recorder is injected where it is needed; nothing is created at import time.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import os
import threading
import time
import uuid
from time import perf_counter_ns
from typing import Any, Callable, TypeVar

from .. import _native
from .._native import GROUP_MAX, CoreRecorder, GroupBase, SeriesBase, Timer
from ..errors import NotOwnerError, RecorderClosedError
from ..snapshot import RECORDER_COUNTERS, RECORDER_GAUGES, HistogramLayout, Snapshot
from .naming import check_series_names
from .process import boot_id, on_fork_in_child
from .values import as_float64
from .window import snapshot_of

__all__ = ["Recorder", "Histogram", "Group", "Timer"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Nanoseconds to the unit ``time()`` records in.
_NS_PER_UNIT = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

DEFAULT_COLLECTOR_PERIOD = 0.002  # seconds; adapts down to 1/8 of it under load


class Histogram(SeriesBase):
    """A bound handle on one series.

    ``record(value)`` is inherited from the C base (``_native/fastpath.c``): one call, never raises.
    NaN/Inf and non-numbers are counted as rejected; a full ring is drained by the recording
    thread itself (docs/core.md), so nothing is dropped; after ``Recorder.close()`` it does
    nothing.  ``time()`` (also C) returns a ``Timer`` that times a
    ``with`` block, or a function as a decorator (``async def`` included), in the series'
    unit (ns, us, ms or s; other units raise ValueError).
    """

    __slots__ = ("model", "version", "metric", "dimension", "unit", "_recorder", "__weakref__")

    model: str
    version: str
    metric: str
    dimension: str | None
    unit: str | None
    _recorder: Recorder

    def record_many(self, values: Any) -> int:
        """Record a batch of values of this series, in order; returns how many were numbers.

        A C-contiguous float64 buffer (``array('d')``, a numpy float64 array) is read in
        place; other buffers, lists, tuples, generators and any iterable are converted value
        by value, each value that is no number counted as rejected (``type``), so
        ``count + rejected + dropped`` grows by exactly the number of values passed
        (``recording/values.py`` has the rules).  Any size: a batch larger than the ring is
        aggregated by the calling thread in ring-sized chunks (about 1.5-2 ns a value), never
        dropped.  Never raises.  After ``Recorder.close()`` it does nothing and returns 0."""
        recorder = self._recorder
        buffer, n, rejected = as_float64(values)
        if rejected:
            recorder._count_reject(self, rejected)
        if buffer is None:
            return 0
        # cffi releases the GIL during the call, so close() must not free the recorder under
        # it.  deque.append/pop are atomic under the GIL and far cheaper than a lock: close()
        # detaches the handles first, then waits for the deque to empty; a call that enters
        # after that sees the handle detached here and never reaches C.
        inflight = recorder._inflight
        inflight.append(None)
        try:
            if not self.attached:
                return 0
            return recorder._core.record_many(self.series_id, buffer, n)
        finally:
            inflight.pop()

    def __repr__(self) -> str:
        dim = f", dimension={self.dimension!r}" if self.dimension else ""
        unit = f", unit={self.unit!r}" if self.unit else ""
        return (
            f"Histogram({self.metric!r}{unit}, model={self.model!r}, "
            f"version={self.version!r}{dim})"
        )


class Group(GroupBase):
    """The series one inference feeds, recorded together: made by ``Recorder.group``.

    ``record(*values)`` takes one value per series, in the group's order, and records them
    with one call into C and one ring update: they land in the same window (a full ring is
    drained first; docs/core.md).  ``start()`` reads the monotonic clock (ns) and
    ``record_since(start, *values)`` records the time since then into the first series, in
    its unit (ns, us, ms or s), and one value per other series: a timed inference with all
    its metrics costs two calls.  Like ``Histogram.record``, a bad value is counted as
    rejected, never raised; a wrong number of values raises TypeError.  After
    ``Recorder.close()`` both do nothing.
    """

    __slots__ = ("handles", "__weakref__")

    handles: tuple[Histogram, ...]

    def __repr__(self) -> str:
        return f"Group({', '.join(repr(h) for h in self.handles)})"


# ``handle.time()`` is implemented in C and returns a ``Timer`` (``_native.Timer``): a context
# manager whose __enter__/__exit__ read the monotonic clock and record in C.  As a decorator it
# calls back here, where coroutine functions are told apart.
def _decorate(handle: Histogram, ns_per_unit: float, fn: F) -> F:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter_ns()
            try:
                return await fn(*args, **kwargs)
            finally:
                handle.record((perf_counter_ns() - start) / ns_per_unit)

        return timed_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            handle.record((perf_counter_ns() - start) / ns_per_unit)

    return timed  # type: ignore[return-value]


_native.set_decorator(_decorate)


def recorder_sizes(
    max_series: int,
    max_threads: int,
    ring_capacity: int,
    buckets_per_octave: int,
    names_bytes: int | None,
    histogram_pages: int | None,
    collector_period: float | None,
) -> dict[str, int]:
    """The core's configuration for these sizes, each checked (``ValueError`` names the rule
    it breaks): a private recorder's, or the device agent's shared one."""
    sizes = {
        "max_series": max_series,
        "max_threads": max_threads,
        "ring_capacity": ring_capacity,
        "buckets_per_octave": buckets_per_octave,
    }
    if names_bytes is not None:
        sizes["names_bytes"] = names_bytes
    if histogram_pages is not None:
        sizes["histogram_pages"] = histogram_pages
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if ring_capacity & (ring_capacity - 1) or not 64 <= ring_capacity <= 1 << 24:
        raise ValueError(
            f"ring_capacity must be a power of two from 64 to 2**24, got {ring_capacity}"
        )
    if not 8 <= buckets_per_octave <= 255:
        raise ValueError(f"buckets_per_octave must be 8..255, got {buckets_per_octave}")
    if max_threads > 1024 or max_series > 65536:
        raise ValueError("max_threads must be <= 1024 and max_series <= 65536")
    if names_bytes is not None and not 16 <= names_bytes <= 64 << 20:
        raise ValueError(f"names_bytes must be 16..64 MiB, got {names_bytes}")
    if histogram_pages is not None and histogram_pages > 1 << 24:
        raise ValueError(f"histogram_pages must be at most 2**24, got {histogram_pages}")
    if collector_period is not None and not 0.0001 <= collector_period <= 60:
        raise ValueError(
            f"collector_period must be None or 0.0001..60 seconds, got {collector_period!r}"
        )
    return sizes


class Recorder:
    """Owns the C recorder: fixed memory, per-thread rings, a background collector.

    Sizes are fixed at creation: ``max_series`` series, ``max_threads`` threads with a ring
    of their own (a thread's ring is reclaimed after it exits; more threads still record,
    through the aggregate lock), ``ring_capacity`` records per ring.  A full ring is drained
    by the thread that fills it, so no value is dropped for lack of room (docs/core.md).
    ``buckets_per_octave`` sets the histogram's accuracy (36: under 1% relative error).
    ``names_bytes`` holds the series' names (default 256 bytes per series: names of about
    250 characters each) and ``histogram_pages`` the histogram pages a window may use (default
    8 per series plus 140; past them values keep octave precision, counted as ``coarse``);
    both scale with ``max_series`` when left None.  ``collector_period`` (seconds, ``None``
    for no background thread) is the longest pause between drains; under load the collector
    drains up to 8 times as often.  ``info()`` reports the memory all this takes.
    """

    def __init__(
        self,
        *,
        max_series: int = 16,
        max_threads: int = 4,
        ring_capacity: int = 2048,
        buckets_per_octave: int = 36,
        names_bytes: int | None = None,
        histogram_pages: int | None = None,
        collector_period: float | None = DEFAULT_COLLECTOR_PERIOD,
    ) -> None:
        sizes = recorder_sizes(max_series, max_threads, ring_capacity, buckets_per_octave,
                               names_bytes, histogram_pages, collector_period)
        self._setup(CoreRecorder(sizes), collector_period)

    @classmethod
    def attach(cls, path: str | os.PathLike[str]) -> Recorder:
        """A recorder in attached mode: this process records into the device agent's shared
        recorder at ``path`` (``edgetelemetry agent``; ``/run/edgetelemetry/recorder`` under
        its systemd unit).  ``histogram()``, ``group()``, ``record``, ``record_many`` and
        ``time()`` are the same calls at the same cost; series register in the segment's
        registry, where every process of the device (C and C++ included) sees them.  The agent
        closes the windows and sends them: ``snapshot()`` and ``drain()`` raise
        ``NotOwnerError``.  ``close()`` detaches; what was recorded stays for the agent.

        A fork child (multiprocessing's fork) keeps recording: it takes a process slot of its
        own on its first record.  Spawned processes attach by path themselves.  Errors, each
        saying what to do: ``NoSegmentError`` (no agent's segment there),
        ``SegmentPermissionError`` (not in the segment's group), ``LayoutMismatchError``
        (another edgetelemetry version than the agent's), ``ProcessTableFullError``,
        ``SegmentTruncatedError``, ``NotASegmentError``; ``OSError`` for the rest."""
        recorder = cls.__new__(cls)
        recorder._setup(CoreRecorder.attach(os.fspath(path)), None, attached=True)
        return recorder

    def _setup(self, core: CoreRecorder, collector_period: float | None, *,
               attached: bool = False) -> None:
        self._attached = attached
        self._lock = threading.Lock()
        self._core = core
        try:
            info = self._core.info()
        except BaseException:
            core.free()
            raise
        self._layout = HistogramLayout(
            buckets_per_octave=info["buckets_per_octave"],
            mantissa_bits=_native.MANTISSA_BITS,
            min_exponent=info["min_exponent"],
            octaves=info["octaves"],
            edges=self._core.edges(info["buckets_per_octave"]),
        )
        self._api_address = self._core.api_address()
        self._handles: dict[int, Histogram] = {}
        self._groups: dict[tuple[int, ...], Group] = {}
        self._inflight: collections.deque[None] = collections.deque()
        self._closed = False
        self._collector_period = collector_period
        self._recorder_id = uuid.uuid4().hex
        self._last_counters = {key: 0 for key in RECORDER_COUNTERS}
        if collector_period is not None:
            self._core.start_collector(int(collector_period * 1e9))
        on_fork_in_child(self._after_fork_in_child)

    # ---- handles ----

    def histogram(
        self,
        metric: str,
        *,
        model: str,
        version: str,
        unit: str | None = None,
        dimension: str | None = None,
    ) -> Histogram:
        """A handle on the series (model, version, metric, dimension); the same names give a
        handle on the same series.  Names are checked against the heartbeat's rules now, with
        an error that says which rule failed and what would pass (``ValueError``).  The
        recorder's registry (shared with C modules recording into it) refuses the rest with a
        ``RegistrationError``: ``UnitConflictError`` for the same series with another unit,
        ``NameClashError`` for a series reported under the same heartbeat name (``latency`` in
        ``ms`` and ``latency-ms``), ``SeriesLimitError`` past ``max_series`` and
        ``NamesFullError`` past ``names_bytes``, each saying what to pass instead."""
        check_series_names(model, version, metric, dimension, unit)
        unit = unit or None
        with self._lock:
            self._check_open()
            series_id = self._core.series_add(model, version, metric, dimension, unit)
            known = self._handles.get(series_id)
            if known is not None:
                return known
            handle = Histogram(self._api_address, self._core.address, series_id)
            handle.model, handle.version, handle.metric = model, version, metric
            handle.dimension, handle.unit = dimension, unit
            _native.set_ns_per_unit(handle, _NS_PER_UNIT.get(unit or "", 0.0))
            handle._recorder = self
            self._handles[series_id] = handle
            return handle

    def group(self, *handles: Histogram) -> Group:
        """A ``Group`` recording one value into each of ``handles`` (1 to 16 handles of this
        recorder, each once) with one call; the same handles in the same order give the same
        group.  For ``record_since`` the first handle's unit must be a time (ns, us, ms, s)."""
        if not 1 <= len(handles) <= GROUP_MAX:
            raise ValueError(f"a group has 1 to {GROUP_MAX} handles, got {len(handles)}")
        for h in handles:
            if not isinstance(h, Histogram):
                raise TypeError(f"a group is made of Histogram handles, got {type(h).__name__}")
            if h._recorder is not self:
                raise ValueError(f"{h!r} belongs to another recorder")
        ids = tuple(h.series_id for h in handles)
        if len(set(ids)) != len(ids):
            raise ValueError("each series may appear once in a group")
        with self._lock:
            self._check_open()
            known = self._groups.get(ids)
            if known is not None:
                return known
            group = Group(
                self._api_address, self._core.address, ids, _native.ns_per_unit(handles[0])
            )
            group.handles = handles
            self._groups[ids] = group
            return group

    def _count_reject(self, handle: Histogram, n: int = 1) -> None:
        with self._lock:
            if handle.attached:
                self._core.count_reject(handle.series_id, n)

    # ---- windows ----

    def snapshot(self) -> Snapshot:
        """Drain every ring, close the current window and return it; the next one opens.

        The snapshot lists the series with activity in the window (a value counted, rejected
        or dropped), not every registered series: an idle series is absent (``snap.get``
        returns None), and the cost follows the active series."""
        with self._lock:
            self._check_open()
            self._check_owner("snapshot")
            return self._close_window()

    def _close_window(self) -> Snapshot:
        raw = self._core.close_window()
        info = self._core.info()
        counters = {key: info[key] - self._last_counters[key] for key in self._last_counters}
        self._last_counters = {key: info[key] for key in self._last_counters}
        figures = {key: int(info[key]) for key in RECORDER_GAUGES}
        figures.update(counters)
        return snapshot_of(raw, self._layout, (self._recorder_id, boot_id()), figures)

    def drain(self) -> None:
        """Drain every thread's ring into the current window now, as the collector thread
        does every ``collector_period``; the window stays open.  For a recorder without a
        collector thread (``collector_period=None``) that records more than its rings hold
        between snapshots."""
        with self._lock:
            self._check_open()
            self._check_owner("drain")
            self._core.collect()

    # ---- introspection ----

    @property
    def recorder_id(self) -> str:
        """Random per recorder, new in a fork child: tells snapshots' sources apart."""
        return self._recorder_id

    def native_handle(self) -> tuple[int, int]:
        """``(et_api table address, et_recorder address)`` for a C/C++ module in this process
        that records into this recorder (see docs/native-sdk.md).  Valid until ``close()``:
        the native side must stop recording before the recorder closes."""
        with self._lock:
            self._check_open()
            return self._api_address, self._core.address

    @property
    def attached(self) -> bool:
        """True for a recorder made by ``attach`` (the device agent closes its windows)."""
        return self._attached

    @property
    def segment_path(self) -> str | None:
        """The shared recorder's file (attached, or the agent's), None for a private one."""
        return self._core.path

    def shared_info(self) -> dict[str, Any]:
        """A shared recorder's figures (``et_recorder_shared_info``): ``segment_id``,
        ``generation``, ``processes``, ``process_slot`` (this process's, -1 before its first
        record in a fork child), ``attach_refusals``, ``processes_reaped``, ``lock_steals``,
        ``journal_replays``, ``pending_seq``...  ``ValueError`` for a private recorder."""
        if self._core.path is None:
            raise ValueError("a private recorder has no shared figures")
        with self._lock:
            self._check_open()
            return self._core.shared_info()

    @property
    def layout(self) -> HistogramLayout:
        return self._layout

    @property
    def relative_error(self) -> float:
        return self._layout.relative_error

    def info(self) -> dict[str, Any]:
        """Configuration, memory in bytes and the collector's figures."""
        with self._lock:
            self._check_open()
            return self._core.info()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- lifetime ----

    def close(self) -> Snapshot | None:
        """Stop recording and free the C recorder.  Returns the last window if anything was
        recorded or counted in it since the last snapshot, so nothing is lost; else None.
        An attached recorder detaches instead (returns None): its records stay in the
        segment for the agent.  Idempotent."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            self._detach_handles()
            if self._attached:
                self._core.free()
                return None
            try:
                self._core.stop_collector()
                last = self._close_window()
            finally:
                self._core.free()
        return last if last.series else None  # a window lists only series with activity

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # a safety net only: close() is the lifetime; the collector thread must stop first
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def _detach_handles(self) -> None:
        for handle in self._handles.values():
            _native.detach(handle)
        for group in self._groups.values():
            _native.detach(group)
        while self._inflight:  # record_many calls still inside C (GIL released)
            time.sleep(0.0001)

    def _check_open(self) -> None:
        if self._closed:
            raise RecorderClosedError("the recorder is closed")

    def _check_owner(self, what: str) -> None:
        if self._attached:
            raise NotOwnerError(_native.NOT_OWNER, (
                f"{what}: the windows of an attached recorder are closed by the device agent "
                f"(edgetelemetry agent, which owns {self._core.path}); record here, read the "
                "windows at the endpoint"), self._core.path)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._inflight.clear()  # only the forking thread exists here
        if self._closed or self._attached:
            # an attached child is a new process of the device: the core gives it a slot of
            # its own on its first record; its handles stay valid
            return
        # the C core already dropped what the parent recorded; the collector thread is gone
        self._recorder_id = uuid.uuid4().hex
        self._last_counters = {key: 0 for key in self._last_counters}
        if self._collector_period is not None:
            self._core.start_collector(int(self._collector_period * 1e9))
