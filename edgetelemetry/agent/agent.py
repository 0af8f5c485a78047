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
import dataclasses
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from ..errors import EdgeTelemetryError, RecorderClosedError
from ..heartbeat import (
    DeviceIdentity,
    HeartbeatValidationError,
    ModelState,
    PayloadOptions,
    SplitLimits,
    agent_figures,
    input_shape,
    validate_shape,
)
from ..heartbeat.agent_metrics import AGENT_COUNTERS, AGENT_FIGURE_NAMES, SHARED_FIGURES
from ..recording import Recorder, SharedRecorder
from ..snapshot import Snapshot
from .clock import MIN_WALL_NS, SigningOffset, TimeKeeper, phase, restamp
from .config import AgentConfig
from .delivery import Backoff, Cycle, DeliveryLoop, HeartbeatSink, TickResult
from .faults import FaultLog
from .handover import WindowHandover
from .lanes import SinkLanes, build_lanes, otlp_identity
from .sender import Sender
from .signals import SigtermGuard
from .spool import RecordTooLargeError, Spool, SpoolClosedError, SpoolError
from .state import STATE_FILE, StateFile

__all__ = ["Agent", "AgentClosedError", "TickResult"]

log = logging.getLogger(__name__)

_MAX_DEPLOYMENTS = 16  # undelivered DeploymentResults kept; the oldest goes beyond this
_MAX_MODELS = 256  # model states kept (the most recently active)


class AgentClosedError(EdgeTelemetryError):
    """The agent was closed; create a new one."""



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



class Agent(DeliveryLoop, SinkLanes):
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

    ``otlp_endpoint`` and ``mqtt_url`` (config keys) add sinks beside ``SendHeartbeat``, each
    with its own spool cursor and backoff, on its own thread once started (``lanes.py``).
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
        identity = DeviceIdentity(config.device_name, config.fleet_name)
        self._interval = float(config.interval_s)
        self._backoff_cap = float(send_backoff_cap_s)
        self._time = TimeKeeper(clock, monotonic, clock_tolerance_s, clock_jump_threshold_s)

        self._lock = threading.Lock()  # counters and state
        self._window_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._stop = threading.Event()
        self._counters = dict.fromkeys(AGENT_COUNTERS, 0)
        self._started = time.monotonic()
        self._unspooled: Snapshot | None = None  # a window whose append failed
        self._partial: tuple[int, list[dict[str, Any]]] | None = None  # unsent rest of a record
        self._backoff = Backoff()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._guard = SigtermGuard(self.close)
        self._warned_unset = False
        self._delivery_faults = FaultLog(log, "delivery")
        self._reported_models: dict[tuple[str, str], tuple[int | None, int | None]] = {}

        # The state is read before the spool opens: the spool's clock (which ages records at
        # open) depends on whether records stamped by an unset clock are still pending.
        state_dir = config.spool_dir
        self._state_file = StateFile(state_dir, fsync=config.fsync != "never")
        self._state = self._state_file.load()
        self._raw_frame_upto: int | None = self._state.raw_frame_upto
        self._state_dirty = False
        self._spool = Spool(config.spool_dir, max_bytes=config.spool_max_bytes,
                            max_age_s=config.spool_max_age_s, fsync=config.fsync,  # type: ignore[arg-type]
                            clock=self._spool_clock, sinks=config.sinks)
        try:
            # the lanes first: a sink whose package is missing stops us before any connection
            self._lanes = build_lanes(config, otlp_identity(config, agent_version),
                                      rng=self._rng, sleep=self._pause)
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
        # a device agent's shared recorder: each window spooled once, then acknowledged
        self._handover = WindowHandover(recorder, self._spool) \
            if isinstance(recorder, SharedRecorder) else None

        self._offset: SigningOffset = self._sender.signing_offset
        self._sink = HeartbeatSink(
            self._sender, identity,
            split_limits if split_limits is not None else SplitLimits(),
            payload_options if payload_options is not None else PayloadOptions(),
            agent_version)
        shared = tuple(SHARED_FIGURES.values()) if self._handover is not None else ()
        self._sink.figure_names = (*AGENT_FIGURE_NAMES, *self._lane_figure_names(), *shared)

        ref = weakref.ref(self)

        def close_at_exit() -> None:
            agent = ref()
            if agent is not None:
                agent.close()

        self._atexit_hook = close_at_exit
        atexit.register(close_at_exit)
        if install_signal_handlers:
            self._guard.install()
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
        self._start_lanes()
        return self

    def tick(self, *, send: bool = True) -> TickResult:
        """One cycle now: spool the current window, then (``send=True``) send what is due."""
        self._check_open()
        with self._guard.entered():
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
        with self._guard.entered(), self._lock:
            self._state.deployments.append(doc)
            while len(self._state.deployments) > _MAX_DEPLOYMENTS:
                lost = self._state.deployments.pop(0)
                self._counters["deployment-results-dropped"] += 1
                log.warning("more than %d undelivered deployment results: dropped %s",
                            _MAX_DEPLOYMENTS, lost.get("DeploymentName"))
            self._state_dirty = True
            self._try_save_state_locked()  # kept in memory (and retried) if the disk fails

    def report_sample(self, model: str, version: str, timestamp: float | None = None) -> None:
        """Note that ``model``/``version`` captured a sample (``LatestSampleTime``) at
        ``timestamp`` (epoch s; default now by the trusted clock; ignored while untrusted)."""
        when = self._time.trusted_now() if timestamp is None else timestamp
        if when is None or when * 1e9 < MIN_WALL_NS:
            log.debug("sample time for %s %s ignored: no trusted time", model, version)
            return
        ns = int(when * 1e9)
        with self._guard.entered(), self._lock:
            cur = self._state.models.get((model, version), ModelState())
            if cur.latest_sample_ns is None or ns > cur.latest_sample_ns:
                self._state.models[(model, version)] = replace(cur, latest_sample_ns=ns)
                self._state_dirty = True

    def stats(self) -> dict[str, float]:
        """The agent's operating figures, by the names they have in ``AgentMetrics``."""
        with self._guard.entered():
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
        with self._guard.entered():
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
            lanes_ended = self._stop_lanes(deadline)
            busy = any(t is not None and t.is_alive() for t in (helper, self._thread))
            if busy:
                log.warning("close: a send is still running after %gs; its record stays "
                            "spooled", timeout)
            with self._lock:
                self._state_dirty = True
                self._try_save_state_locked()
            try:
                self._spool.close()
            except SpoolError as exc:  # the spool logged the fault; acks since are resent
                log.debug("close: %s", exc)
            if self._owns_sender and not busy:
                self._sender.close()
            if lanes_ended and not busy:
                for lane in self._lanes:
                    lane.sink.close()
            atexit.unregister(self._atexit_hook)
            self._guard.restore()

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
        offset = phase(self.config.device_name, self.config.fleet_name) * interval
        first = (offset - now_wall) % interval if now_wall is not None else offset
        grid0 = self._monotonic() + first
        k = 0
        while True:
            target = grid0 + k * interval + self._jitter()
            if self._stop.wait(max(0.0, target - self._monotonic())):
                return
            try:
                with self._guard.entered():
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
            result = replace(result, sinks=self._run_lanes(drain_until))
        with self._lock:
            if self._state_dirty:
                self._try_save_state_locked()
        return replace(result, spool_error=self._spool.fault)

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
        if self._handover is not None:
            snap: Snapshot | None = self._handover.take()
        else:
            try:
                snap = self._recorder.snapshot()
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
        snap = restamp(snap, base)
        self._note_models(snap)
        raw_frame = self._raw_frame_upto is not None or self._time.trusted_now() is None
        try:
            seq = self._spool.append(snap.to_msgpack())
        except RecordTooLargeError as exc:
            log.error("window too large for the spool, lost: %s", exc)
            self._bump("windows-lost")
            self._unspooled = None
            if self._handover is not None:
                self._handover.done(snap)
            return None
        except SpoolError as exc:  # logged once by the spool; reported in its figures
            kept = "in memory, merged into the next" if self._handover is None else \
                "in the shared recorder, spooled at the next tick"
            log.debug("could not spool the window (kept %s): %s", kept, exc)
            self._bump("spool-append-failures")
            self._unspooled = snap if self._handover is None else None
            return None
        self._unspooled = None
        if self._handover is not None:
            self._handover.done(snap)
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

    def _final_send(self, deadline: float) -> None:
        """close(): one try at sending the newest record (normally the window just spooled)."""
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return
        try:
            if self._time.trusted_base_ns() is None:
                return
            self._sync_sender_clock()
            rec = self._spool.newest(sink=self._sink.name)
            if rec is not None:
                self._deliver(rec, Cycle(), with_state=True)
            self._lanes_final(deadline)
        except (SpoolClosedError, AgentClosedError):
            pass
        except SpoolError as exc:  # logged once by the spool
            log.debug("close: the last send stopped: %s", exc)
        except Exception:
            log.exception("close: the last send failed")
        finally:
            self._send_lock.release()

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

    def _try_save_state_locked(self) -> None:
        """Save the state unless the disk is failing (then it stays dirty, in memory, and is
        saved once the spool can write again).  A failure is the spool's disk failing: it is
        reported (and logged once) as the spool's own writes are."""
        if self._spool.fault is not None:
            return  # the spool already reports the disk; the state is saved once it recovers
        try:
            self._save_state_locked()
        except OSError as exc:
            self._state_dirty = True
            self._spool.report_write_failure(f"could not save {STATE_FILE}", exc)

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
        try:
            spool = self._spool.stats()
        except SpoolClosedError:
            spool = {}
        sender = self._sender.stats()
        with self._lock:
            counters = dict(self._counters)
            pending = len(self._state.deployments)
        figures = agent_figures(spool, sender, counters,
                                state_corruption_events=self._state_file.corruption_events,
                                deployments_pending=pending,
                                uptime_s=time.monotonic() - self._started)
        figures.update(self._lane_figures())
        if self._handover is not None:
            figures.update(self._handover.figures())
        return figures

    def _check_open(self) -> None:
        if self._closed:
            raise AgentClosedError("the agent is closed")
