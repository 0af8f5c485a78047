"""Delivery: spooled windows out through a sink, oldest backlog paced, failures backed off.

A *sink* is where delivered records go.  ``HeartbeatSink``: each record becomes
``SendHeartbeat`` requests (``heartbeat.record_requests``: the same parts, each with its
``spool-seq`` key, every time the record is sent) sent by a ``Sender``.  ``DeliveryLoop`` is the
send half of ``Agent`` for it: per cycle, the newest record first, then pending
``DeploymentResult``s, then the backlog at ``backlog_rate``; a record is acked (on the heartbeat
sink's spool cursor) once every request it was split into got 200 (see ``agent.py`` for the
whole cycle).  The other sinks (OTLP, MQTT) run in lanes of their own (``lanes.py``) with the
same ``Backoff`` and ``drain_backlog``.  A failure is logged once per class of failure
(``FaultLog``, one per sink), and a spool that cannot be written or read ends the cycle without
raising.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import SnapshotFormatError
from ..heartbeat import (
    DeviceIdentity,
    HeartbeatValidationError,
    ModelState,
    PayloadOptions,
    SplitLimits,
    build_heartbeat,
    split_heartbeat,
)
from ..heartbeat.agent_metrics import AGENT_FIGURE_NAMES
from ..heartbeat.record import RecordRequests, record_requests
from ..recording.process import boot_id
from ..snapshot import Snapshot
from .clock import MIN_WALL_NS, SigningOffset, TimeKeeper, restamp
from .config import AgentConfig
from .faults import FaultLog, describe_send_failure
from .sender import Outcome, Sender, SendResult
from .spool import Record as SpoolRecord
from .spool import Spool, SpoolError
from .state import AgentState

__all__ = ["Backoff", "Cycle", "Delivery", "DeliveryLoop", "HeartbeatSink", "SinkCycle",
           "TickResult", "drain_backlog"]

log = logging.getLogger(__name__)

PENDING_BATCH = 8  # backlog records read per pending() call: memory stays flat in an outage
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class HeartbeatSink:
    """Records as ``SendHeartbeat`` requests, sent by a ``Sender``: build, split, send."""

    name = "sagemaker-edge"

    def __init__(self, sender: Sender, identity: DeviceIdentity, limits: SplitLimits,
                 options: PayloadOptions, agent_version: str | None) -> None:
        self.sender = sender
        self.identity = identity
        self.limits = limits
        self.options = options
        self.agent_version = agent_version
        # every AgentMetrics name the agent's figures can take: room is kept for each in a
        # record's first request, so the split never depends on their values (record.py)
        self.figure_names: tuple[str, ...] = AGENT_FIGURE_NAMES

    def record_requests(self, snap: Snapshot, seq: int, spool_id: str) -> RecordRequests:
        """The spool record ``seq`` (the window ``snap``) as requests, cut to the limits: the
        same parts every time (fill in the agent's figures and model times to send them)."""
        return record_requests(snap, self.identity, spool_seq=seq, spool_id=spool_id,
                               limits=self.limits, options=self.options,
                               agent_version=self.agent_version,
                               figure_names=self.figure_names)

    def status_requests(self, metrics: Mapping[str, float],
                        models: Mapping[tuple[str, str], ModelState]) -> list[dict[str, Any]]:
        """The agent's figures and model states only (no window)."""
        params = build_heartbeat([], self.identity, agent_metrics=metrics, model_state=models,
                                 agent_version=self.agent_version, options=self.options)
        return split_heartbeat(params, self.limits)

    def deployment_requests(self, result: Mapping[str, Any]) -> list[dict[str, Any]]:
        params = build_heartbeat([], self.identity, deployment_result=result,
                                 agent_version=self.agent_version)
        return split_heartbeat(params, self.limits)

    def send(self, request: Mapping[str, Any]) -> SendResult:
        return self.sender.send(request)


class Delivery(enum.Enum):
    SENT = "sent"  # every request got 200; acked
    DEAD = "dead"  # dead-lettered (never deliverable)
    HELD = "held"  # no trusted time yet: stays in the spool, the cycle ends
    FAILED = "failed"  # a request failed (retry later): stays, the cycle ends


@dataclass(frozen=True)
class SinkCycle:
    """What one cycle of another sink (``lanes.py``) did; ``send_skipped`` while it backs off."""

    sink: str
    requests_sent: int = 0
    records_acked: int = 0
    records_dead_lettered: int = 0
    send_skipped: bool = False
    failure: SendResult | None = None


@dataclass(frozen=True)
class TickResult:
    """What one tick did.  ``window`` is the spooled window's source (recorder id, window seq)
    and ``spooled_seq`` its spool sequence number (the ``spool-seq`` it is sent with); both
    None when nothing was spooled.  ``failure`` is the send result that ended the cycle.
    ``sinks``: the other sinks' cycles when they ran in this tick (not started: ``tick()`` runs
    them one after the other; started, each runs on its own thread)."""

    spooled_seq: int | None = None
    window: tuple[str, int] | None = None
    requests_sent: int = 0
    records_acked: int = 0
    records_dead_lettered: int = 0
    send_skipped: bool = False
    failure: SendResult | None = None
    spool_error: str | None = None  # the spool's write failure in progress (Spool.fault)
    sinks: tuple[SinkCycle, ...] = ()


@dataclass
class Backoff:
    """Failed send cycles in a row, and when the next may start: after ``n`` failed cycles,
    ``uniform(0, min(cap, interval * (2**(n-1) - 1)))`` seconds, at least the failure's
    ``Retry-After`` (capped)."""

    streak: int = 0
    not_before: float = -math.inf

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    def succeeded(self) -> int:
        """Back to normal; returns how many cycles had failed in a row."""
        streak, self.streak, self.not_before = self.streak, 0, -math.inf
        return streak

    def failed(self, now: float, interval: float, cap: float, rng: random.Random,
               failure: SendResult | None) -> float:
        """Count a failed cycle; returns the wait before the next."""
        self.streak += 1
        delay = rng.uniform(0.0, min(cap, interval * (2.0 ** min(self.streak - 1, 30) - 1)))
        retry_after = failure.retry_after_s if failure else None
        if retry_after:
            delay = min(cap, max(delay, retry_after))
        self.not_before = now + delay
        return delay


def drain_backlog(read: Callable[[int], list[SpoolRecord]],
                  deliver: Callable[[SpoolRecord], Delivery], cycle: Cycle, handled: set[int],
                  *, rate: float, interval: float, drain_until: float,
                  stop: threading.Event) -> Delivery | None:
    """The backlog oldest first, ``read(n)`` ``PENDING_BATCH`` records at a time, paced to
    ``rate`` requests/s, at most ``rate * interval / 2`` requests and until ``drain_until``.
    Returns the delivery that ended it early (FAILED or HELD), else None."""
    budget = max(1, int(rate * interval * 0.5))
    pace = 1.0 / rate
    next_at = time.monotonic() + pace
    while budget > 0 and not stop.is_set() and time.monotonic() < drain_until:
        batch = [r for r in read(min(PENDING_BATCH, budget)) if r.seq not in handled]
        if not batch:
            break
        for rec in batch:
            if budget <= 0 or time.monotonic() >= drain_until:
                break
            if stop.wait(max(0.0, next_at - time.monotonic())):
                break
            handled.add(rec.seq)
            before = cycle.requests
            delivery = deliver(rec)
            budget -= max(1, cycle.requests - before)
            next_at = time.monotonic() + pace
            if delivery in (Delivery.FAILED, Delivery.HELD):
                return delivery
        del batch
    return None


@dataclass
class Cycle:
    requests: int = 0
    sent: int = 0
    acked: int = 0
    dead: int = 0
    failure: SendResult | None = None


class DeliveryLoop:
    """The send half of ``Agent`` (a base class: it works on the agent's own state)."""

    config: AgentConfig
    _sink: HeartbeatSink
    _spool: Spool
    _time: TimeKeeper
    _offset: SigningOffset
    _lock: threading.Lock
    _send_lock: threading.Lock
    _stop: threading.Event
    _state: AgentState
    _state_dirty: bool
    _raw_frame_upto: int | None
    _partial: tuple[int, list[dict[str, Any]]] | None
    _backoff: Backoff
    _backoff_cap: float
    _interval: float
    _rng: random.Random
    _monotonic: Callable[[], float]
    _counters: dict[str, int]
    _delivery_faults: FaultLog
    _reported_models: dict[tuple[str, str], tuple[int | None, int | None]]

    def _bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def _state_metrics(self) -> dict[str, float]:
        raise NotImplementedError

    def _note_models(self, snap: Snapshot) -> None:
        raise NotImplementedError

    def _save_state_locked(self) -> None:
        raise NotImplementedError

    def _send_step(self, result: TickResult, drain_until: float) -> TickResult:
        with self._send_lock:
            now = self._monotonic()
            if not self._backoff.ready(now):
                self._bump("send-cycles-skipped")
                return replace(result, send_skipped=True)
            cycle = Cycle()
            try:
                ok = self._send_cycle(cycle, drain_until)
            except SpoolError as exc:  # the spool logged it once; the next cycle tries again
                log.debug("send cycle ended by the spool: %s", exc)
                return replace(result, requests_sent=cycle.sent, records_acked=cycle.acked,
                               records_dead_lettered=cycle.dead)
            if ok:
                self._backoff.succeeded()  # the FaultLog says "recovered", once
            else:
                self._bump("send-cycles-failed")
                delay = self._backoff.failed(now, self._interval, self._backoff_cap, self._rng,
                                             cycle.failure)
                # the WARNING is _send's FaultLog's, once per class of failure
                log_cycle_failure(self._sink.name, cycle.failure, self._backoff.streak, delay)
            return replace(result, requests_sent=cycle.sent, records_acked=cycle.acked,
                           records_dead_lettered=cycle.dead, failure=cycle.failure)

    def _send_cycle(self, cycle: Cycle, drain_until: float) -> bool:
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
        rec = self._spool.newest(sink=self._sink.name)
        if rec is not None:
            handled.add(rec.seq)
            delivery = self._deliver(rec, cycle, with_state=not state_sent)
            if delivery is Delivery.FAILED:
                return False
            if delivery is Delivery.HELD:
                return True
            state_sent = state_sent or delivery is Delivery.SENT
        # A heartbeat goes out every interval, window or not; and the model times the window
        # did not carry (idle models, sample times) go out when they changed.
        if (not state_sent or self._models_unreported()) and not self._send_status(cycle):
            return False
        if not self._send_deployments(cycle):
            return False
        ended = drain_backlog(
            lambda n: self._spool.pending(limit=n, sink=self._sink.name),
            lambda rec: self._deliver(rec, cycle, with_state=False), cycle, handled,
            rate=self.config.backlog_rate, interval=self._interval, drain_until=drain_until,
            stop=self._stop)
        if ended is Delivery.FAILED:
            return False
        if ended is None:
            self._resolve_raw_frame()
        return True

    def _deliver(self, rec: SpoolRecord, cycle: Cycle, *, with_state: bool) -> Delivery:
        partial = self._partial
        if partial is not None and partial[0] == rec.seq:
            requests = partial[1]  # the requests of this record that were not delivered yet
        else:
            prepared = self._prepare(rec, with_state)
            if isinstance(prepared, Delivery):
                if prepared is Delivery.DEAD:
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
                return Delivery.DEAD
            self._partial = (rec.seq, requests[i:])
            cycle.failure = result
            return Delivery.FAILED
        self._forget_partial(rec.seq)
        try:
            acked = self._spool.ack(rec.seq, sink=self._sink.name)
        except SpoolError as exc:
            # acked in memory (never sent again by this agent); the cursor is written by the
            # next write that succeeds, and a crash before that resends it: the endpoint
            # drops the resend by its spool-seq key
            log.debug("ack of record %d not yet durable: %s", rec.seq, exc)
            acked = True
        if acked:
            cycle.acked += 1
        return Delivery.SENT

    def _forget_partial(self, seq: int) -> None:
        if self._partial is not None and self._partial[0] == seq:
            self._partial = None

    def _prepare(self, rec: SpoolRecord, with_state: bool) -> list[dict[str, Any]] | Delivery:
        try:
            snap = Snapshot.from_msgpack(rec.payload)
        except SnapshotFormatError as exc:
            self._bump("records-undecodable")
            self._dead_letter(rec.seq, f"snapshot does not decode: {exc}")
            return Delivery.DEAD
        trusted = self._trusted_snapshot(snap)
        if trusted is None:
            return Delivery.HELD
        if isinstance(trusted, str):
            self._bump("records-unrecoverable-time")
            self._dead_letter(rec.seq, trusted)
            return Delivery.DEAD
        snap = trusted
        self._note_models(snap)
        try:
            parts = self._sink.record_requests(snap, rec.seq, self._spool.spool_id)
        except (HeartbeatValidationError, ValueError, OverflowError) as exc:
            self._bump("records-unbuildable")
            self._dead_letter(rec.seq, f"cannot build a heartbeat: {exc}")
            return Delivery.DEAD
        figures = self._state_metrics() if with_state else None
        with self._lock:
            models = dict(self._state.models)
        return parts.filled(figures, models)

    def _trusted_snapshot(self, snap: Snapshot) -> Snapshot | str | None:
        """``snap`` stamped by the trusted clock; None to hold it; a reason to dead-letter it."""
        base = self._time.trusted_base_ns()
        src = snap.sources[-1]
        same_boot = bool(src.boot_id) and src.boot_id == boot_id() \
            and all(s.boot_id == src.boot_id for s in snap.sources)
        if base is None:
            return snap if snap.end_wall_ns >= MIN_WALL_NS else None
        if same_boot:
            # Our monotonic clock still counts from this window: re-derive its wall times if
            # they were stamped by an unset or wrong clock (disagreeing with the trusted one).
            if abs(snap.end_wall_ns - (snap.end_mono_ns + base)) > self._time.tolerance_ns:
                self._bump("windows-restamped")
                return restamp(snap, base)
            return snap
        if snap.end_wall_ns < MIN_WALL_NS:
            return ("window stamped by an unset clock in an earlier boot: its wall time "
                    "cannot be recovered")
        return snap

    def _send_status(self, cycle: Cycle) -> bool:
        """A heartbeat of the agent's figures and model states only (no window)."""
        with self._lock:
            models = dict(self._state.models)
        for request in self._sink.status_requests(self._state_metrics(), models):
            result = self._send(request, cycle)
            if not result.ok:
                cycle.failure = result
                return False
        return True

    def _send_deployments(self, cycle: Cycle) -> bool:
        while True:
            with self._lock:
                pending = self._state.deployments[0] if self._state.deployments else None
            if pending is None:
                return True
            try:
                requests = self._sink.deployment_requests(pending)
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

    def _send(self, request: Mapping[str, Any], cycle: Cycle) -> SendResult:
        cycle.requests += 1
        result = self._sink.send(request)
        self._time.learn(result.server_time)
        if result.ok:
            cycle.sent += 1
            self._delivery_faults.ok()
            self._note_reported(request)
        else:
            self._delivery_faults.failed(*describe_send_failure(
                result, endpoint=self._sink.sender.endpoint_url,
                region=self._sink.sender.region, identity=self._sink.identity))
        return result

    def _note_reported(self, request: Mapping[str, Any]) -> None:
        """Remember the model times the endpoint now has (as it stores them: microseconds)."""
        for entry in request.get("Models", ()):
            key = (entry["ModelName"], entry["ModelVersion"])
            times = (_micros(entry.get("LatestInference")), _micros(entry.get("LatestSampleTime")))
            self._reported_models[key] = times

    def _models_unreported(self) -> bool:
        """Whether a model's time in the state is newer than the endpoint was told."""
        with self._lock:
            models = dict(self._state.models)
        for key, st in models.items():
            told = self._reported_models.get(key, (None, None))
            for now, then in ((st.latest_inference_ns, told[0]), (st.latest_sample_ns, told[1])):
                if now is not None and (then is None or now // 1000 > then):
                    return True
        return False

    def _sync_sender_clock(self) -> None:
        """Sign with the clock we stamp with: the endpoint's when ours disagrees with it."""
        self._time.sync(self._offset)

    def _dead_letter(self, seq: int, reason: str, sink: str | None = None) -> bool:
        try:
            return self._spool.dead_letter(seq, reason, sink=sink or self._sink.name)
        except SpoolError as exc:  # disk trouble (logged by the spool): tried again later
            log.debug("could not dead-letter record %d: %s", seq, exc)
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


def _micros(when: Any) -> int | None:
    """A request's timestamp (an aware ``datetime``) as integer microseconds since the epoch."""
    if when is None:
        return None
    delta: timedelta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def log_cycle_failure(sink: str, failure: SendResult | None, streak: int, delay: float) -> None:
    """DEBUG: the WARNING is the sink's ``FaultLog``'s, once per class of failure."""
    log.debug("%s: send cycle failed (%s %s: %s); %d in a row, next try in >= %.0fs", sink,
            failure.outcome.value if failure else "?", failure.error_code if failure else "",
            failure.message if failure else "", streak, delay)
