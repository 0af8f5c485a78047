"""The device agent's side of a shared recorder: it owns the segment every process records into.

    rec = SharedRecorder.create("/run/edgetelemetry/recorder", max_threads=64, gid=grp_id)
    snap = rec.snapshot()        # the pending window: the same one (same seq) until ...
    rec.ack(snap.sources[-1].seq_last)   # ... it is stored durably; then the next one
    rec.close()                  # the segment stays (producers keep recording into it)

Producers attach with ``Recorder.attach(path)`` (or ``et_recorder_attach`` in C/C++).  The
window hand-over is the core's (docs/shared-recorder.md): a window closed and not acknowledged
is returned again by every close, also by the next agent after a crash, so the agent stores
windows idempotently by (segment id, seq) and acknowledges them only then.

A segment truncated under the agent (someone with write access shrank the file) is reported and
replaced by a fresh one here, inside ``snapshot()``/``ack()``: what the old one held is lost,
producers attached to it fault or record into nothing until they attach again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any

from .._native import CoreRecorder, SharedOptions
from ..errors import SegmentTruncatedError
from ..snapshot import RECORDER_COUNTERS, RECORDER_GAUGES, Snapshot
from .process import boot_id
from .recorder import DEFAULT_COLLECTOR_PERIOD, Recorder, recorder_sizes
from .window import snapshot_of

__all__ = ["SharedRecorder"]

log = logging.getLogger(__name__)


class SharedRecorder(Recorder):
    """A ``Recorder`` whose memory is a segment file that other processes attach to.

    Make it with ``create``.  ``snapshot()`` returns the pending window (the hand-over above)
    and ``ack(seq)`` releases it; ``histogram()`` and recording work as in any recorder.
    ``recorder_id`` is the segment's id (random at creation, kept across agent restarts), so
    a window's (recorder id, seq) names it uniquely.  ``close()`` stops the collector and
    leaves the segment and its pending window for the next agent; it returns None."""

    _options: SharedOptions
    _sizes: dict[str, int]
    _replaced: int
    _figures: tuple[int, dict[str, int]] | None

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        max_series: int = 256,
        max_threads: int = 64,
        ring_capacity: int = 2048,
        buckets_per_octave: int = 36,
        names_bytes: int | None = None,
        histogram_pages: int | None = None,
        collector_period: float | None = DEFAULT_COLLECTOR_PERIOD,
        mode: int = 0o660,
        gid: int | None = None,
        max_processes: int = 64,
        lock_timeout: float = 0.1,
        replace: bool = False,
    ) -> SharedRecorder:
        """Create the segment at ``path`` or open and recover the one there (the directory
        must exist: systemd's ``RuntimeDirectory=``).  ``max_threads`` counts rings of every
        process of the device; ``max_series`` series for the whole device.
        ``collector_period`` None: no collector thread (``drain()`` by hand, which also
        reaps dead processes).  ``mode`` and
        ``gid`` (None: this process's group) decide who may attach; ``max_processes`` how many
        processes at once.  ``lock_timeout`` (seconds) is the longest the agent waits on a
        lock a live producer holds.  ``replace``: a segment of another configuration or
        layout is replaced instead of refused (``SegmentConfigError``,
        ``LayoutMismatchError``).  A truncated segment is always replaced, and counted in
        ``segments_replaced``.  Another live agent: ``AgentBusyError``."""
        if not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be permission bits (0..0o777), got {mode!r}")
        if not isinstance(max_processes, int) or not 1 <= max_processes <= 4096:
            raise ValueError(f"max_processes must be 1..4096, got {max_processes!r}")
        if not 0.001 <= lock_timeout <= 60:
            raise ValueError(f"lock_timeout must be 0.001..60 seconds, got {lock_timeout!r}")
        sizes = recorder_sizes(max_series, max_threads, ring_capacity, buckets_per_octave,
                               names_bytes, histogram_pages, collector_period)
        options = SharedOptions(mode=mode, gid=gid, max_processes=max_processes,
                                lock_timeout_ns=int(lock_timeout * 1e9), replace=replace)
        replaced = 0
        try:
            core = CoreRecorder.create_shared(os.fspath(path), sizes, options)
        except SegmentTruncatedError as exc:
            log.error("%s; replacing it with a fresh segment", exc)
            core = CoreRecorder.create_shared(os.fspath(path), sizes,
                                              dataclasses.replace(options, replace=True))
            replaced = 1
        recorder = cls.__new__(cls)
        recorder._own(core, sizes, options, collector_period, replaced)
        return recorder

    def _own(self, core: CoreRecorder, sizes: dict[str, int], options: SharedOptions,
             collector_period: float | None, replaced: int) -> None:
        self._options = options
        self._sizes = sizes
        self._replaced = replaced
        self._figures = None
        self._setup(core, collector_period)
        self._adopt()

    def _adopt(self) -> None:
        info = self._core.shared_info()
        self._recorder_id = info["segment_id"]
        # counters move from what the segment says now: a new agent does not report as this
        # window's what earlier agents already reported
        now = self._core.info()
        self._last_counters = {key: int(now[key]) for key in RECORDER_COUNTERS}
        log.info("shared recorder %s: segment %s, generation %d, %d process(es) attached, %s",
                 self._core.path, info["segment_id"], info["generation"], info["processes"],
                 f"window {info['pending_seq']} pending" if info["pending_seq"] < 1 << 63
                 else "no window pending")

    # ---- the hand-over ----

    def snapshot(self) -> Snapshot:
        """The pending window: closed now, or the one closed before and not acknowledged yet
        (the same seq, bounds and values, also after an agent restart).  Producers record
        into the next window meanwhile.  ``LockTimeoutError``: a live producer held the lock
        past ``lock_timeout``; nothing changed, try again later."""
        with self._lock:
            self._check_open()
            try:
                return self._close_window()
            except SegmentTruncatedError:
                self._replace_truncated()
                return self._close_window()

    def ack(self, seq: int) -> None:
        """Window ``seq`` is stored durably: its aggregates may go, the next close makes a new
        one.  Acknowledging one acknowledged before does nothing."""
        with self._lock:
            self._check_open()
            try:
                self._core.ack(seq)
            except SegmentTruncatedError:
                self._replace_truncated()  # seq is stored: nothing of it is lost
            if self._figures is not None and self._figures[0] == seq:
                self._figures = None

    def _close_window(self) -> Snapshot:
        raw = self._core.close_window()
        if self._figures is not None and self._figures[0] == raw.seq:
            figures = self._figures[1]  # the same window again: the same figures
        else:
            info = self._core.info()
            figures = {key: int(info[key]) for key in RECORDER_GAUGES}
            for key in RECORDER_COUNTERS:
                figures[key] = int(info[key]) - self._last_counters[key]
                self._last_counters[key] = int(info[key])
            self._figures = (raw.seq, figures)
        return snapshot_of(raw, self._layout, (self._recorder_id, boot_id()), figures)

    def _replace_truncated(self) -> None:
        old = self._core
        log.error("shared recorder %s was truncated under the agent (segment %s): its pending "
                  "records are lost; replacing it with a fresh segment (producers must attach "
                  "again)", old.path, self._recorder_id)
        self._detach_handles()
        self._handles.clear()
        self._groups.clear()
        try:
            old.stop_collector()
        except SegmentTruncatedError:
            pass
        old.free()
        assert old.path is not None
        options = dataclasses.replace(self._options, replace=True)
        self._core = CoreRecorder.create_shared(old.path, self._sizes, options)
        self._replaced += 1
        self._figures = None
        if self._collector_period is not None:
            self._core.start_collector(int(self._collector_period * 1e9))
        self._adopt()

    def renew_if_truncated(self) -> bool:
        """Replace the segment now if it was truncated under the agent (rather than at the
        next ``snapshot()``): True if it was.  For the agent's main loop, every second."""
        with self._lock:
            if self._closed or not self._core.shared_info()["truncated"]:
                return False
            self._replace_truncated()
            return True

    # ---- figures and lifetime ----

    def shared_info(self) -> dict[str, Any]:
        """The segment's figures (``Recorder.shared_info``), and ``segments_replaced``: fresh
        segments this agent made for truncated ones."""
        with self._lock:
            self._check_open()
            out = self._core.shared_info()
        out["segments_replaced"] = self._replaced
        return out

    def close(self) -> Snapshot | None:
        """Stop the collector and let go of the segment: it stays, with its pending window,
        for the next agent; producers keep recording into it.  Returns None.  Idempotent."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            self._detach_handles()
            try:
                self._core.stop_collector()
            except SegmentTruncatedError:
                pass
            finally:
                self._core.free()
        return None

    def _after_fork_in_child(self) -> None:
        # a fork child of the agent is a producer (the core's rule): no collector, no windows
        self._lock = threading.Lock()
        self._inflight.clear()
        self._attached = True
