"""The agent: recorder windows -> durable spool -> ``SendHeartbeat``, every interval.

::

    with Recorder() as rec, Agent(rec, device_name="cam-01", fleet="line-1",
                                  endpoint_url="https://edge.example.com") as agent:
        agent.start()            # a daemon thread ticks every interval (per-device phase)
        ...                      # record from the inference loop

One tick (``tick()`` runs one synchronously):

1. **window**: ``recorder.snapshot()``, wall times re-derived from the window's monotonic
   bounds (below), appended to the spool.  The window counts as taken only once ``append``
   returned; if it fails the snapshot stays in memory and is merged into the next window.
2. **send** (unless backing off after failed cycles): while the endpoint's time is unknown (the
   first cycle), a status heartbeat of the agent's figures; then the newest record (with the
   agent's figures), then pending ``DeploymentResult``s, then the backlog oldest-first at most
   ``backlog_rate`` requests/s for at most half an interval, read ``pending(limit=8)`` at a
   time.  A record is acked once every request it was split into got 200; after a failure
   only its undelivered requests are sent again (while this agent runs).

Failures (``Sender`` outcomes): RETRY / REFRESH_CREDENTIALS / CLOCK_SKEW keep the record and end
the cycle; the next cycle waits ``uniform(0, min(cap, interval * (2**(n-1) - 1)))`` after n
failed cycles in a row.  FATAL (validation, other 4xx), a record that no longer decodes or
builds, and a window stamped by an unset clock in an earlier boot are dead-lettered.

Time: ``clock`` (wall) and ``monotonic`` are injectable.  Snapshot wall times are
``mono_ns + base`` where ``base`` is wall-minus-``CLOCK_MONOTONIC`` taken when the window is
spooled, so every time in a window comes from one clock reading and a jump inside a window
cannot tear it.  The trusted base is the local clock's, unless the endpoint's ``Date`` (learnt
from every answer) disagrees by more than ``clock_tolerance_s``; then the endpoint's.  A clock
before 2020 with no ``Date`` known yet is untrusted: windows are held in the spool, a heartbeat
without timestamps goes out to learn the time, and held windows of this boot are re-stamped from
their monotonic bounds.  Nothing before 2020 is ever sent.  See ``docs/agent.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import enum
import hashlib
import logging
import math
import os
import random
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from .agent_state import AgentState, StateFile
from .config import AgentConfig
from .errors import EdgeTelemetryError, RecorderClosedError, SnapshotFormatError
from .heartbeat import (
    MIN_TIMESTAMP,
    DeviceIdentity,
    HeartbeatValidationError,
    ModelState,
    PayloadOptions,
    SplitLimits,
    build_heartbeat,
    split_heartbeat,
    validate_send_heartbeat,
    validate_shape,
)
from .heartbeat.validate import input_shape
from .recorder import Recorder, _boot_id
from .sender import Outcome, Sender, SendResult
from .snapshot import Snapshot
from .spool import Record as SpoolRecord
from .spool import RecordTooLargeError, Spool, SpoolClosedError, SpoolError

__all__ = ["Agent", "AgentClosedError", "TickResult"]

log = logging.getLogger(__name__)

MIN_WALL_NS = int(MIN_TIMESTAMP.timestamp()) * 1_000_000_000
_PENDING_BATCH = 8  # backlog records read per pending() call: memory stays flat in an outage
_MAX_DEPLOYMENTS = 16  # undelivered DeploymentResults kept; the oldest goes beyond this
_MAX_MODELS = 256  # model states kept (the most recently active)
_DATE_HALF_S = 0.5  # Date is whole seconds: the server's time is in [Date, Date + 1)
_METRIC_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_DIMENSION_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9/])*$")

# Snapshot.recorder figures reported with every window (the window's own values).
_RECORDER_FIGURES = {
    "records_drained": "records-drained",
    "ring_high_water": "ring-high-water",
    "memory_bytes": "recorder-memory-bytes",
    "unknown_series": "dropped-unknown-series",
    "threads_active": "threads-active",
    "collector_passes": "collector-passes",
}
_DROP_REASONS = ("ring_full", "no_ring", "closed")
_REJECT_REASONS = ("nan", "inf", "type")

# Spool stats() -> metric name.
_SPOOL_FIGURES = {
    "records": "spool-records",
    "bytes": "spool-bytes",
    "files": "spool-files",
    "oldest_unsent_age_s": "oldest-unsent-age-s",
    "evicted_records": "evicted-records",
    "evicted_bytes": "evicted-bytes",
    "evicted_by_age_records": "evicted-by-age-records",
    "torn_tails": "torn-tails",
    "dead_letters": "dead-letters",
    "dead_letters_dropped": "dead-letters-dropped",
    "cursor_resets": "cursor-resets",
}
# Sender stats() -> metric name.
_SENDER_FIGURES = {
    "attempts": "send-attempts",
    "successes": "send-successes",
    "retries": "send-retries",
    "failures_throttled": "send-failures-throttled",
    "failures_5xx": "send-failures-5xx",
    "failures_timeout": "send-failures-timeout",
    "failures_connection": "send-failures-connection",
    "failures_validation": "send-failures-validation",
    "failures_auth": "send-failures-auth",
    "failures_clock_skew": "send-failures-clock-skew",
    "failures_credentials": "send-failures-credentials",
    "failures_other": "send-failures-other",
    "clock_corrections": "clock-corrections",
    "credential_refreshes": "credential-refreshes",
    "clock_offset_s": "clock-offset-s",
}
# The agent's own counters (since this agent started).
_AGENT_COUNTERS = (
    "clock-jumps",
    "clock-unset",
    "windows-restamped",
    "windows-lost",
    "spool-append-failures",
    "records-undecodable",
    "records-unbuildable",
    "records-unrecoverable-time",
    "send-cycles-failed",
    "send-cycles-skipped",
    "deployment-results-dropped",
)


class AgentClosedError(EdgeTelemetryError):
    """The agent was closed; create a new one."""


class _Delivery(enum.Enum):
    SENT = "sent"  # every request got 200; acked
    DEAD = "dead"  # dead-lettered (never deliverable)
    HELD = "held"  # no trusted time yet: stays in the spool, the cycle ends
    FAILED = "failed"  # a request failed (retry later): stays, the cycle ends


@dataclass(frozen=True)
class TickResult:
    """What one tick did.  ``window`` is the spooled window's source (recorder id, window seq)
    and ``spooled_seq`` its spool sequence number (the ``spool-seq`` it is sent with); both
    None when nothing was spooled.  ``failure`` is the send result that ended the cycle."""

    spooled_seq: int | None = None
    window: tuple[str, int] | None = None
    requests_sent: int = 0
    records_acked: int = 0
    records_dead_lettered: int = 0
    send_skipped: bool = False
    failure: SendResult | None = None


@dataclass
class _Cycle:
    requests: int = 0
    sent: int = 0
    acked: int = 0
    dead: int = 0
    failure: SendResult | None = None


class _TimeKeeper:
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


def _restamp(snap: Snapshot, base_ns: int) -> Snapshot:
    """``snap`` with every wall time set to its monotonic time + ``base_ns``."""

    def wall(mono: int | None) -> int | None:
        return None if mono is None else mono + base_ns

    series = tuple(
        replace(s, first_wall_ns=wall(s.first_mono_ns), last_wall_ns=wall(s.last_mono_ns))
        for s in snap.series
    )
    return replace(snap, start_wall_ns=snap.start_mono_ns + base_ns,
                   end_wall_ns=snap.end_mono_ns + base_ns, series=series)


def _metric_name(prefix: str, reason: str) -> str | None:
    name = f"{prefix}-{reason.replace('_', '-')}"
    return name if 4 <= len(name) <= 100 and _METRIC_RE.match(name) else None


def window_metrics(snap: Snapshot, spool_seq: int) -> dict[str, float]:
    """The AgentMetrics that describe one window (sent with that window's heartbeat)."""
    out: dict[str, float] = {
        "spool-seq": float(spool_seq),
        "window-duration-s": max(0, snap.end_mono_ns - snap.start_mono_ns) / 1e9,
    }
    for key, name in _RECORDER_FIGURES.items():
        out[name] = float(snap.recorder.get(key, 0))
    dropped, rejected = snap.dropped, snap.rejected
    for prefix, counts, known in (("dropped", dropped, _DROP_REASONS),
                                  ("rejected", rejected, _REJECT_REASONS)):
        for reason in sorted(set(known) | set(counts)):
            metric = _metric_name(prefix, reason)
            if metric is not None:
                out[metric] = float(counts.get(reason, 0))
    return out


def _json_safe(value: Any) -> Any:
    """Datetimes as epoch seconds (what the state file and botocore both take)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return aware.timestamp()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _phase(device: str, fleet: str) -> float:
    """A fraction in [0, 1) fixed per device: where in each interval it reports."""
    digest = hashlib.sha256(f"{fleet}\0{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class Agent:
    """Snapshots a ``Recorder`` every interval into a durable spool and sends heartbeats.

    Settings resolve through ``AgentConfig``: keyword arguments (including any config key as
    ``**overrides``, e.g. ``backlog_rate=5``) over ``EDGETELEMETRY_*`` variables over the file
    named by ``EDGETELEMETRY_CONFIG``; or pass ``config`` (keyword arguments still win).
    ``interval`` is ``interval_s`` (default 60 s).  ``credentials`` and ``sender`` replace the
    configured ones (``sender`` mainly for tests; it is then not closed by the agent).

    ``install_signal_handlers=True`` (main thread only) makes SIGTERM flush and close the agent
    and then run the previous handler (the default one terminates the process).  Interpreter
    exit always closes an open agent.  ``send_backoff_cap_s`` caps the wait between failed
    send cycles; ``clock_tolerance_s`` is how far the local clock may be from the endpoint's
    before the endpoint's is used; ``clock_jump_threshold_s`` how much wall - monotonic may
    move between ticks before it counts as a jump.
    """

    def __init__(
        self,
        recorder: Recorder,
        *,
        device_name: str | None = None,
        fleet: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        interval: float | None = None,
        config: AgentConfig | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        credentials: Any = None,
        sender: Sender | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        install_signal_handlers: bool = False,
        agent_version: str | None = None,
        split_limits: SplitLimits | None = None,
        payload_options: PayloadOptions | None = None,
        send_backoff_cap_s: float = 900.0,
        clock_tolerance_s: float = 60.0,
        clock_jump_threshold_s: float = 2.0,
        **overrides: Any,
    ) -> None:
        explicit = {
            "device_name": device_name,
            "fleet_name": fleet,
            "endpoint_url": endpoint_url,
            "region": region,
            "interval_s": interval,
            "spool_dir": os.fspath(spool_dir) if spool_dir is not None else None,
            **overrides,
        }
        explicit = {k: v for k, v in explicit.items() if v is not None}
        if sender is not None and "endpoint_url" not in explicit and config is None:
            explicit["endpoint_url"] = sender.endpoint_url  # only a placeholder: unused
        if config is None:
            config = AgentConfig.load(**explicit)
        elif explicit:
            current = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            current.pop("credentials_source")  # worked out again from the keys present
            merged = {k: v for k, v in {**current, **explicit}.items() if v is not None}
            config = AgentConfig.load(env={}, **merged)
        if install_signal_handlers and threading.current_thread() is not threading.main_thread():
            raise ValueError("install_signal_handlers=True needs the main thread")
        if not send_backoff_cap_s >= 0 or not clock_tolerance_s > 0 \
                or not clock_jump_threshold_s > 0:
            raise ValueError("send_backoff_cap_s must be >= 0; clock_tolerance_s and "
                             "clock_jump_threshold_s must be positive")
        self.config = config
        self._recorder = recorder
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng if rng is not None else random.Random()
        self._identity = DeviceIdentity(config.device_name, config.fleet_name)
        self._interval = float(config.interval_s)
        self._limits = split_limits if split_limits is not None else SplitLimits()
        self._options = payload_options if payload_options is not None else PayloadOptions()
        self._agent_version = agent_version
        self._backoff_cap = float(send_backoff_cap_s)
        self._tolerance_ns = int(clock_tolerance_s * 1e9)
        self._time = _TimeKeeper(clock, monotonic, clock_tolerance_s, clock_jump_threshold_s)

        self._lock = threading.Lock()  # counters and state
        self._window_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._stop = threading.Event()
        self._tls = threading.local()
        self._counters = dict.fromkeys(_AGENT_COUNTERS, 0)
        self._started = time.monotonic()
        self._unspooled: Snapshot | None = None  # a window whose append failed
        self._partial: tuple[int, list[dict[str, Any]]] | None = None  # unsent rest of a record
        self._fail_streak = 0
        self._send_not_before = -math.inf
        self._thread: threading.Thread | None = None
        self._closed = False
        self._term_pending = False
        self._prev_sigterm: Any = None
        self._sigterm_installed = False
        self._warned_unset = False

        # The state is read before the spool opens: the spool's clock (which ages records at
        # open) depends on whether records stamped by an unset clock are still pending.
        state_dir = config.spool_dir
        self._state_file = StateFile(state_dir, fsync=config.fsync != "never")
        self._state = self._state_file.load() if os.path.isdir(state_dir) else AgentState()
        self._raw_frame_upto: int | None = self._state.raw_frame_upto
        self._state_dirty = False
        self._spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes,
                            max_age_s=config.spool_max_age_s, fsync=config.fsync,  # type: ignore[arg-type]
                            clock=self._spool_clock)
        try:
            self._owns_sender = sender is None
            if sender is None:
                kwargs = config.sender_kwargs()
                if credentials is not None:
                    kwargs["credentials"] = credentials
                # Backoff sleeps wait on the stop event, so close() cuts them short.
                sender = Sender(**kwargs, rng=self._rng, clock=clock, sleep=self._pause)
            self._sender: Sender = sender
        except BaseException:
            self._spool.close()
            raise

        ref = weakref.ref(self)

        def close_at_exit() -> None:
            agent = ref()
            if agent is not None:
                agent.close()

        self._atexit_hook = close_at_exit
        atexit.register(close_at_exit)
        if install_signal_handlers:
            self._install_sigterm()
        log.info("agent for device %s (fleet %s) -> %s every %gs, spool %s",
                 config.device_name, config.fleet_name, self._sender.endpoint_url,
                 self._interval, self._spool.directory)

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> Agent:
        """Tick on a daemon thread every interval (at a per-device phase, with jitter)."""
        self._check_open()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edgetelemetry-agent",
                                            daemon=True)
            self._thread.start()
        return self

    def tick(self, *, send: bool = True) -> TickResult:
        """One cycle now: spool the current window, then (``send=True``) send what is due."""
        self._check_open()
        with self._entered():
            return self._tick(send, time.monotonic() + 0.5 * self._interval)

    def report_deployment(self, result: Mapping[str, Any]) -> None:
        """Queue a ``DeploymentResult`` (the model's shape; datetimes or epoch seconds).

        It is checked now (``HeartbeatValidationError`` says what is wrong) and written to disk
        before this returns; it is sent in its own heartbeat and kept until that heartbeat is
        acknowledged (``FATAL`` answers drop it, counted).
        """
        self._check_open()
        doc = _json_safe(result)
        if not isinstance(doc, dict) or not doc.get("DeploymentName"):
            raise HeartbeatValidationError("DeploymentResult.DeploymentName", "required", None,
                                           "a deployment result must name its deployment")
        validate_shape(input_shape("SendHeartbeat").members["DeploymentResult"], doc,
                       "DeploymentResult")
        with self._entered(), self._lock:
            self._state.deployments.append(doc)
            while len(self._state.deployments) > _MAX_DEPLOYMENTS:
                lost = self._state.deployments.pop(0)
                self._counters["deployment-results-dropped"] += 1
                log.warning("more than %d undelivered deployment results: dropped %s",
                            _MAX_DEPLOYMENTS, lost.get("DeploymentName"))
            self._save_state_locked()

    def report_sample(self, model: str, version: str, timestamp: float | None = None) -> None:
        """Note that ``model``/``version`` captured a sample (``LatestSampleTime``) at
        ``timestamp`` (epoch s; default now by the trusted clock; ignored while untrusted)."""
        when = self._time.trusted_now() if timestamp is None else timestamp
        if when is None or when * 1e9 < MIN_WALL_NS:
            log.debug("sample time for %s %s ignored: no trusted time", model, version)
            return
        ns = int(when * 1e9)
        with self._entered(), self._lock:
            cur = self._state.models.get((model, version), ModelState())
            if cur.latest_sample_ns is None or ns > cur.latest_sample_ns:
                self._state.models[(model, version)] = replace(cur, latest_sample_ns=ns)
                self._state_dirty = True

    def stats(self) -> dict[str, float]:
        """The agent's operating figures, by the names they have in ``AgentMetrics``."""
        with self._entered():
            return self._state_metrics()

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def sender(self) -> Sender:
        return self._sender

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 2.0) -> None:
        """Spool the current window, try one send if time allows, stop; within ``timeout``.

        A send still running at the deadline is abandoned (its record stays in the spool and is
        sent again by the next agent).  Does not close the recorder.  Idempotent.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        self._stop.set()
        with self._entered():
            if self._window_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    self._window_step()
                except Exception:
                    log.exception("could not spool the last window")
                finally:
                    self._window_lock.release()
            else:
                log.error("close: the window step stayed busy; the current window is lost")
            helper = None
            if deadline - time.monotonic() > 0.1:
                helper = threading.Thread(target=self._final_send, args=(deadline,),
                                          name="edgetelemetry-agent-close", daemon=True)
                try:
                    helper.start()
                    helper.join(max(0.0, deadline - time.monotonic()))
                except RuntimeError:  # no new threads at interpreter shutdown (3.12+)
                    helper = None
                    self._final_send(deadline)
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(max(0.0, deadline - time.monotonic()))
            busy = any(t is not None and t.is_alive() for t in (helper, self._thread))
            if busy:
                log.warning("close: a send is still running after %gs; its record stays "
                            "spooled", timeout)
            with self._lock:
                try:
                    self._save_state_locked()
                except OSError as exc:
                    log.error("could not save the agent state: %s", exc)
            self._spool.close()
            if self._owns_sender and not busy:
                self._sender.close()
            atexit.unregister(self._atexit_hook)
            self._restore_sigterm()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._thread else "idle")
        return (f"Agent(device={self.config.device_name!r}, fleet={self.config.fleet_name!r}, "
                f"interval={self._interval:g}, {state})")

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        interval = self._interval
        # The phase puts this device at a fixed point of the wall-clock interval grid, so a
        # fleet started together (after a power cut) still spreads over the interval.
        now_wall = self._time.trusted_now()
        phase = _phase(self.config.device_name, self.config.fleet_name) * interval
        first = (phase - now_wall) % interval if now_wall is not None else phase
        grid0 = self._monotonic() + first
        k = 0
        while True:
            target = grid0 + k * interval + self._jitter()
            if self._stop.wait(max(0.0, target - self._monotonic())):
                return
            try:
                with self._entered():
                    self._tick(True, time.monotonic() + 0.5 * interval)
            except (SpoolClosedError, AgentClosedError):
                return
            except Exception:  # the loop must outlive any one bad cycle
                log.exception("agent cycle failed")
            k = max(k + 1, math.floor((self._monotonic() - grid0) / interval) + 1)

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _jitter(self) -> float:
        return self._rng.uniform(-self.config.jitter, self.config.jitter) * self._interval / 2

    def _tick(self, send: bool, drain_until: float) -> TickResult:
        with self._window_lock:
            spooled = self._window_step()
        seq, window = spooled if spooled is not None else (None, None)
        result = TickResult(spooled_seq=seq, window=window)
        if send:
            result = self._send_step(result, drain_until)
        with self._lock:
            if self._state_dirty:
                try:
                    self._save_state_locked()
                except OSError as exc:
                    log.error("could not save the agent state: %s", exc)
        return result

    # -- window -------------------------------------------------------------------------------

    def _window_step(self) -> tuple[int, tuple[str, int]] | None:
        """Snapshot the recorder and append the window to the spool (caller holds the lock)."""
        unset, jump = self._time.observe()
        if jump is not None:
            self._bump("clock-jumps")
            log.warning("wall clock jumped by %+.1f s against the monotonic clock", jump)
        if unset:
            self._bump("clock-unset")
            if not self._warned_unset:
                log.warning("wall clock is unset (before 2020): windows are held until the "
                            "endpoint's Date gives the time")
                self._warned_unset = True
        try:
            snap: Snapshot | None = self._recorder.snapshot()
        except RecorderClosedError:
            snap = None
        if snap is not None and self._unspooled is not None:
            try:
                snap = self._unspooled.merge(snap)
            except ValueError as exc:
                log.error("could not merge an unspooled window (%s); it is lost", exc)
                self._bump("windows-lost")
        elif snap is None:
            snap = self._unspooled
        if snap is None:
            return None
        base = self._time.trusted_base_ns()
        if base is None:
            base = self._time.local_base_ns()[0]  # held; re-stamped once the time is known
        snap = _restamp(snap, base)
        self._note_models(snap)
        raw_frame = self._raw_frame_upto is not None or self._time.trusted_now() is None
        try:
            seq = self._spool.append(snap.to_msgpack())
        except RecordTooLargeError as exc:
            log.error("window too large for the spool, lost: %s", exc)
            self._bump("windows-lost")
            self._unspooled = None
            return None
        except SpoolError as exc:
            log.error("could not spool the window (kept in memory, merged into the next): %s",
                      exc)
            self._bump("spool-append-failures")
            self._unspooled = snap
            return None
        self._unspooled = None
        if raw_frame:
            with self._lock:
                self._raw_frame_upto = seq
                self._state_dirty = True
        src = snap.sources[-1]
        return seq, (src.recorder_id, src.seq_last)

    def _spool_clock(self) -> float:
        # Record stamps age records out.  While records stamped by an unset clock are pending,
        # keep the spool on that clock: switching to the real time would age them all out
        # before they could be re-stamped and sent.
        if self._raw_frame_upto is None:
            now = self._time.trusted_now()
            if now is not None:
                return now
        return self._clock()

    # -- send ---------------------------------------------------------------------------------

    def _send_step(self, result: TickResult, drain_until: float) -> TickResult:
        with self._send_lock:
            now = self._monotonic()
            if now < self._send_not_before:
                self._bump("send-cycles-skipped")
                return replace(result, send_skipped=True)
            cycle = _Cycle()
            ok = self._send_cycle(cycle, drain_until)
            if ok:
                if self._fail_streak:
                    log.info("delivering again after %d failed cycles", self._fail_streak)
                self._fail_streak = 0
                self._send_not_before = -math.inf
            else:
                self._fail_streak += 1
                self._bump("send-cycles-failed")
                ceiling = min(self._backoff_cap,
                              self._interval * (2.0 ** min(self._fail_streak - 1, 30) - 1))
                delay = self._rng.uniform(0.0, ceiling)
                retry_after = cycle.failure.retry_after_s if cycle.failure else None
                if retry_after:
                    delay = min(self._backoff_cap, max(delay, retry_after))
                self._send_not_before = now + delay
                failure = cycle.failure
                level = logging.WARNING if self._fail_streak == 1 else logging.DEBUG
                log.log(level, "send cycle failed (%s %s: %s); %d in a row, next try in >= %.0fs",
                        failure.outcome.value if failure else "?",
                        failure.error_code if failure else "", failure.message if failure else "",
                        self._fail_streak, delay)
            return replace(result, requests_sent=cycle.sent, records_acked=cycle.acked,
                           records_dead_lettered=cycle.dead, failure=cycle.failure)

    def _send_cycle(self, cycle: _Cycle, drain_until: float) -> bool:
        self._sync_sender_clock()
        state_sent = False
        if not self._time.server_known:
            # Learn the endpoint's time before sending any window: a heartbeat of the agent's
            # figures (no window timestamps) gets an answer with a Date (the Sender corrects
            # its signing clock on "Signature expired" on the way).  Windows stamped by a clock
            # that disagrees with it are then re-stamped before they go out.
            if not self._send_status(cycle):
                return False
            state_sent = True
            self._sync_sender_clock()
        handled: set[int] = set()
        rec = self._spool.newest()
        if rec is not None:
            handled.add(rec.seq)
            delivery = self._deliver(rec, cycle, with_state=not state_sent)
            if delivery is _Delivery.FAILED:
                return False
            if delivery is _Delivery.HELD:
                return True
            state_sent = state_sent or delivery is _Delivery.SENT
        if not state_sent and not self._send_status(cycle):
            return False  # a heartbeat goes out every interval, window or not
        if not self._send_deployments(cycle):
            return False
        budget = max(1, int(self.config.backlog_rate * self._interval * 0.5))
        pace = 1.0 / self.config.backlog_rate
        next_at = time.monotonic() + pace
        while budget > 0 and not self._stop.is_set() and time.monotonic() < drain_until:
            batch = [r for r in self._spool.pending(limit=min(_PENDING_BATCH, budget))
                     if r.seq not in handled]
            if not batch:
                break
            for rec in batch:
                if budget <= 0 or time.monotonic() >= drain_until:
                    break
                if self._stop.wait(max(0.0, next_at - time.monotonic())):
                    break
                handled.add(rec.seq)
                before = cycle.requests
                delivery = self._deliver(rec, cycle, with_state=False)
                budget -= max(1, cycle.requests - before)
                next_at = time.monotonic() + pace
                if delivery is _Delivery.FAILED:
                    return False
                if delivery is _Delivery.HELD:
                    return True
            del batch
        self._resolve_raw_frame()
        return True

    def _deliver(self, rec: SpoolRecord, cycle: _Cycle, *, with_state: bool) -> _Delivery:
        partial = self._partial
        if partial is not None and partial[0] == rec.seq:
            requests = partial[1]  # the requests of this record that were not delivered yet
        else:
            prepared = self._prepare(rec, with_state)
            if isinstance(prepared, _Delivery):
                if prepared is _Delivery.DEAD:
                    cycle.dead += 1
                return prepared
            requests = prepared
        for i, request in enumerate(requests):
            result = self._send(request, cycle)
            if result.ok:
                continue
            if result.outcome is Outcome.FATAL:
                self._forget_partial(rec.seq)
                if self._dead_letter(rec.seq, f"{result.error_code}: {result.message}"):
                    cycle.dead += 1
                return _Delivery.DEAD
            self._partial = (rec.seq, requests[i:])
            cycle.failure = result
            return _Delivery.FAILED
        self._forget_partial(rec.seq)
        if self._spool.ack(rec.seq):
            cycle.acked += 1
        return _Delivery.SENT

    def _forget_partial(self, seq: int) -> None:
        if self._partial is not None and self._partial[0] == seq:
            self._partial = None

    def _prepare(self, rec: SpoolRecord, with_state: bool) -> list[dict[str, Any]] | _Delivery:
        try:
            snap = Snapshot.from_msgpack(rec.payload)
        except SnapshotFormatError as exc:
            self._bump("records-undecodable")
            self._dead_letter(rec.seq, f"snapshot does not decode: {exc}")
            return _Delivery.DEAD
        trusted = self._trusted_snapshot(snap)
        if trusted is None:
            return _Delivery.HELD
        if isinstance(trusted, str):
            self._bump("records-unrecoverable-time")
            self._dead_letter(rec.seq, trusted)
            return _Delivery.DEAD
        snap = trusted
        self._note_models(snap)
        metrics = window_metrics(snap, rec.seq)
        if with_state:
            metrics.update(self._state_metrics())
        with self._lock:
            models = dict(self._state.models)
        try:
            params = build_heartbeat([snap], self._identity, agent_metrics=metrics,
                                     model_state=models, agent_version=self._agent_version,
                                     options=self._options)
            src = snap.sources[-1]
            if _DIMENSION_RE.match(src.recorder_id) and len(src.recorder_id) <= 1000:
                # The window's source identity: (device, recorder id, window seq) is unique.
                window_seq: dict[str, Any] = {"MetricName": "window-seq",
                                              "Dimension": src.recorder_id,
                                              "Value": float(src.seq_last)}
                if params["AgentMetrics"] and "Timestamp" in params["AgentMetrics"][0]:
                    window_seq["Timestamp"] = params["AgentMetrics"][0]["Timestamp"]
                params["AgentMetrics"].append(window_seq)
                validate_send_heartbeat(params)
            return split_heartbeat(params, self._limits)
        except (HeartbeatValidationError, ValueError, OverflowError) as exc:
            self._bump("records-unbuildable")
            self._dead_letter(rec.seq, f"cannot build a heartbeat: {exc}")
            return _Delivery.DEAD

    def _trusted_snapshot(self, snap: Snapshot) -> Snapshot | str | None:
        """``snap`` stamped by the trusted clock; None to hold it; a reason to dead-letter it."""
        base = self._time.trusted_base_ns()
        src = snap.sources[-1]
        same_boot = bool(src.boot_id) and src.boot_id == _boot_id() \
            and all(s.boot_id == src.boot_id for s in snap.sources)
        if base is None:
            return snap if snap.end_wall_ns >= MIN_WALL_NS else None
        if same_boot:
            # Our monotonic clock still counts from this window: re-derive its wall times if
            # they were stamped by an unset or wrong clock (disagreeing with the trusted one).
            if abs(snap.end_wall_ns - (snap.end_mono_ns + base)) > self._tolerance_ns:
                self._bump("windows-restamped")
                return _restamp(snap, base)
            return snap
        if snap.end_wall_ns < MIN_WALL_NS:
            return ("window stamped by an unset clock in an earlier boot: its wall time "
                    "cannot be recovered")
        return snap

    def _send_status(self, cycle: _Cycle) -> bool:
        """A heartbeat of the agent's figures and model states only (no window)."""
        with self._lock:
            models = dict(self._state.models)
        params = build_heartbeat([], self._identity, agent_metrics=self._state_metrics(),
                                 model_state=models, agent_version=self._agent_version,
                                 options=self._options)
        for request in split_heartbeat(params, self._limits):
            result = self._send(request, cycle)
            if not result.ok:
                cycle.failure = result
                return False
        return True

    def _send_deployments(self, cycle: _Cycle) -> bool:
        while True:
            with self._lock:
                pending = self._state.deployments[0] if self._state.deployments else None
            if pending is None:
                return True
            try:
                params = build_heartbeat([], self._identity, deployment_result=pending,
                                         agent_version=self._agent_version)
                requests = split_heartbeat(params, self._limits)
                failure = None
            except HeartbeatValidationError as exc:
                requests, failure = [], str(exc)
            for request in requests:
                result = self._send(request, cycle)
                if result.ok:
                    continue
                if result.outcome is not Outcome.FATAL:
                    cycle.failure = result
                    return False
                failure = f"{result.error_code}: {result.message}"
                break
            with self._lock:
                if self._state.deployments and self._state.deployments[0] is pending:
                    self._state.deployments.pop(0)
                if failure is not None:
                    self._counters["deployment-results-dropped"] += 1
                    log.error("deployment result %s refused, dropped: %s",
                              pending.get("DeploymentName"), failure)
                self._save_state_locked()

    def _send(self, request: Mapping[str, Any], cycle: _Cycle) -> SendResult:
        cycle.requests += 1
        result = self._sender.send(request)
        self._time.learn(result.server_time)
        if result.ok:
            cycle.sent += 1
        return result

    def _final_send(self, deadline: float) -> None:
        """close(): one try at sending the newest record (normally the window just spooled)."""
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return
        try:
            if self._time.trusted_base_ns() is None:
                return
            self._sync_sender_clock()
            rec = self._spool.newest()
            if rec is not None:
                self._deliver(rec, _Cycle(), with_state=True)
        except (SpoolClosedError, AgentClosedError):
            pass
        except Exception:
            log.exception("close: the last send failed")
        finally:
            self._send_lock.release()

    def _sync_sender_clock(self) -> None:
        """Sign with the clock we stamp with: the endpoint's when ours disagrees with it."""
        base = self._time.trusted_base_ns()
        if base is None:
            return
        offset = (base - self._time.local_base_ns()[0]) / 1e9
        if abs(offset - self._sender.clock_offset_s) > 1.0:
            self._sender.set_clock_offset(offset)

    def _dead_letter(self, seq: int, reason: str) -> bool:
        try:
            return self._spool.dead_letter(seq, reason)
        except SpoolError as exc:  # disk trouble: it stays pending and is tried again
            log.error("could not dead-letter record %d: %s", seq, exc)
            return False

    def _resolve_raw_frame(self) -> None:
        upto = self._raw_frame_upto
        if upto is None or self._time.trusted_base_ns() is None:
            return
        oldest = self._spool.pending(limit=1)
        if not oldest or oldest[0].seq > upto:
            with self._lock:
                self._raw_frame_upto = None
                self._state_dirty = True
            log.info("records stamped by the unset clock are delivered; the spool now uses "
                     "the trusted clock")

    # -- state and figures --------------------------------------------------------------------

    def _note_models(self, snap: Snapshot) -> None:
        if snap.end_wall_ns < MIN_WALL_NS:
            return
        with self._lock:
            for s in snap.series:
                if s.last_wall_ns is None or s.count == 0:
                    continue
                key = (s.model, s.version)
                cur = self._state.models.get(key, ModelState())
                if cur.latest_inference_ns is None or s.last_wall_ns > cur.latest_inference_ns:
                    self._state.models[key] = replace(cur, latest_inference_ns=s.last_wall_ns)
                    self._state_dirty = True

    def _save_state_locked(self) -> None:
        now = self._time.trusted_now()
        models = self._state.models
        if now is not None:  # forget models idle for longer than the spool keeps windows
            horizon = int((now - self.config.spool_max_age_s) * 1e9)
            for key in [k for k, st in models.items()
                        if max(st.latest_inference_ns or 0, st.latest_sample_ns or 0) < horizon]:
                del models[key]
        if len(models) > _MAX_MODELS:
            ranked = sorted(models, key=lambda k: max(models[k].latest_inference_ns or 0,
                                                      models[k].latest_sample_ns or 0))
            for key in ranked[:len(models) - _MAX_MODELS]:
                del models[key]
        self._state.raw_frame_upto = self._raw_frame_upto
        self._state_file.save(self._state)
        self._state_dirty = False

    def _state_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            spool = self._spool.stats()
        except SpoolClosedError:
            spool = {}
        for key, name in _SPOOL_FIGURES.items():
            if key in spool:
                out[name] = float(spool[key])
        if spool:
            out["corruption-events"] = float(spool["corruption_events"]
                                             + self._state_file.corruption_events)
        sender = self._sender.stats()
        for key, name in _SENDER_FIGURES.items():
            if key in sender:
                out[name] = float(sender[key])
        with self._lock:
            for name, value in self._counters.items():
                out[name] = float(value)
            out["deployment-results-pending"] = float(len(self._state.deployments))
        out["agent-uptime-s"] = round(time.monotonic() - self._started, 3)
        return out

    def _bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def _check_open(self) -> None:
        if self._closed:
            raise AgentClosedError("the agent is closed")

    # -- signals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _entered(self) -> Iterator[None]:
        """Marks this thread as inside the agent, so SIGTERM does not re-enter it mid-step."""
        depth = getattr(self._tls, "depth", 0)
        self._tls.depth = depth + 1
        try:
            yield
        finally:
            self._tls.depth = depth
            if depth == 0 and self._term_pending \
                    and threading.current_thread() is threading.main_thread():
                self._term_pending = False
                self._terminate(signal.SIGTERM, None)

    def _install_sigterm(self) -> None:
        self._prev_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_installed = True

    def _restore_sigterm(self) -> None:
        if not self._sigterm_installed:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal works in the main thread only; the handler stays harmless
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._prev_sigterm)
        self._sigterm_installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if getattr(self._tls, "depth", 0) > 0:
            # Interrupted inside the agent on this thread (a user calling tick()): finishing
            # that step first is the only safe order; _entered() runs the rest on the way out.
            self._term_pending = True
            return
        self._terminate(signum, frame)

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        prev = self._prev_sigterm
        log.info("SIGTERM: flushing the current window")
        self.close()
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_IGN:
            return
        else:  # SIG_DFL (or unknown): terminate as if we had never been here
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
