"""The agent's other sinks (OTLP, MQTT), each in a lane of its own: its own spool cursor, its
own backoff, and (once the agent is started) its own thread, so an outage of one holds neither
the heartbeat nor the other sinks.

A lane's cycle: the newest record it has not had (with the agent's figures), then its backlog
oldest first at ``backlog_rate`` for at most half an interval (``delivery.drain_backlog``).
OK acks the record on the lane's cursor; FATAL dead-letters it for that sink only
(``dead/dl-<seq>-<sink>.rec``); anything else keeps it and backs the lane off
(``delivery.Backoff``).  A record that does not decode, or whose window time cannot be trusted,
is handled as on the heartbeat path.  Woken by every tick; ``close()`` tries the newest record
once more within its deadline.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from .._version import __version__
from ..errors import SnapshotFormatError
from ..heartbeat import window_metrics
from ..heartbeat.agent_metrics import SPOOL_SEQ
from ..otlp import OtlpIdentity, OtlpMissingError
from ..snapshot import Snapshot
from .config import AgentConfig, ConfigError
from .delivery import Backoff, Cycle, Delivery, SinkCycle, drain_backlog, log_cycle_failure
from .faults import FaultLog, describe_sink_failure
from .sender import Outcome, SendResult
from .spool import Record, Spool, SpoolClosedError, SpoolError

if TYPE_CHECKING:
    from .clock import TimeKeeper

__all__ = ["Lane", "RecordSink", "SinkLanes", "build_lanes"]

log = logging.getLogger(__name__)

_LANE_COUNTERS = ("send-cycles-failed", "send-cycles-skipped", "records-unbuildable")
_SPOOL_FIGURES = ("records", "delivered", "lost", "dead_letters", "oldest_unsent_age_s")


class RecordSink(Protocol):
    """What a lane sends through: one window in, one request (or message) out."""

    name: str

    def payload(self, snap: Snapshot, metrics: Mapping[str, float]) -> bytes: ...

    def send(self, body: bytes) -> SendResult: ...

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


class Lane:
    """One sink's delivery state.  ``busy``: one cycle at a time (its thread, a tick, close)."""

    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink
        self.backoff = Backoff()
        self.wake = threading.Event()
        self.busy = threading.Lock()
        self.thread: threading.Thread | None = None
        self.counters = dict.fromkeys(_LANE_COUNTERS, 0)
        self.faults = FaultLog(log, f"{sink.name} delivery")  # one WARNING per class


def build_lanes(config: AgentConfig, identity: OtlpIdentity, *, rng: random.Random,
                sleep: Callable[[float], None]) -> list[Lane]:
    """A lane per sink the config turns on besides the heartbeat (none by default)."""
    lanes = []
    if config.otlp_endpoint is not None or config.mqtt_url is not None:
        try:
            from opentelemetry.proto.metrics.v1 import metrics_pb2  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"otlp_endpoint and mqtt_url need the opentelemetry-proto "
                              f"package: pip install 'edgetelemetry[otlp]' ({exc})") from None
    if config.otlp_endpoint is not None:
        from .otlp_sink import OtlpSink

        lanes.append(Lane(OtlpSink.from_config(config, identity, rng=rng, sleep=sleep)))
    if config.mqtt_url is not None:
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"mqtt_url needs the paho-mqtt package: pip install "
                              f"'edgetelemetry[mqtt]' ({exc})") from None
        from .mqtt_sink import MqttSink

        lanes.append(Lane(MqttSink.from_config(config, identity)))
    return lanes


def otlp_identity(config: AgentConfig, agent_version: str | None) -> OtlpIdentity:
    return OtlpIdentity(config.device_name, config.fleet_name, agent_version or __version__)


class SinkLanes:
    """The lanes of ``Agent`` (a base class: it works on the agent's own state)."""

    config: AgentConfig
    _lanes: list[Lane]
    _spool: Spool
    _time: TimeKeeper
    _stop: threading.Event
    _interval: float
    _backoff_cap: float
    _rng: random.Random
    _monotonic: Callable[[], float]

    if TYPE_CHECKING:  # DeliveryLoop's and Agent's, beside this base
        def _bump(self, name: str, n: int = 1) -> None: ...
        def _state_metrics(self) -> dict[str, float]: ...
        def _trusted_snapshot(self, snap: Snapshot) -> Snapshot | str | None: ...
        def _dead_letter(self, seq: int, reason: str, sink: str | None = None) -> bool: ...

    # -- driving the lanes ---------------------------------------------------------------------

    def _start_lanes(self) -> None:
        for lane in self._lanes:
            if lane.thread is None:
                lane.thread = threading.Thread(target=self._lane_loop, args=(lane,),
                                               name=f"edgetelemetry-{lane.sink.name}",
                                               daemon=True)
                lane.thread.start()

    def _run_lanes(self, drain_until: float) -> tuple[SinkCycle, ...]:
        """After a tick's window: wake the lanes' threads, or (not started) run each now."""
        done = []
        for lane in self._lanes:
            if lane.thread is not None:
                lane.wake.set()
            else:
                done.append(self._lane_cycle(lane, drain_until))
        return tuple(done)

    def _stop_lanes(self, deadline: float) -> bool:
        """Wake the threads to stop and wait for them until ``deadline``; True if all ended."""
        for lane in self._lanes:
            lane.wake.set()
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        return not any(lane.thread is not None and lane.thread.is_alive()
                       for lane in self._lanes)

    def _lanes_final(self, deadline: float) -> None:
        """close(): one try at each lane's newest record, within ``deadline``."""
        for lane in self._lanes:
            left = deadline - time.monotonic()
            if left <= 0 or not lane.busy.acquire(timeout=left):
                return
            try:
                rec = self._spool.newest(sink=lane.sink.name)
                if rec is not None and lane.backoff.ready(self._monotonic()):
                    self._lane_deliver(lane, rec, Cycle(), with_state=True)
            except SpoolClosedError:
                return
            except SpoolError as exc:  # logged once by the spool
                log.debug("close: the last send to %s stopped: %s", lane.sink.name, exc)
            except Exception:
                log.exception("close: the last send to %s failed", lane.sink.name)
            finally:
                lane.busy.release()

    def _lane_loop(self, lane: Lane) -> None:
        while not self._stop.is_set():
            lane.wake.wait()
            lane.wake.clear()
            if self._stop.is_set():
                return
            try:
                self._lane_cycle(lane, time.monotonic() + 0.5 * self._interval)
            except SpoolClosedError:
                return
            except Exception:  # the lane must outlive any one bad cycle
                log.exception("%s: cycle failed", lane.sink.name)

    # -- one cycle -----------------------------------------------------------------------------

    def _lane_cycle(self, lane: Lane, drain_until: float) -> SinkCycle:
        name = lane.sink.name
        with lane.busy:
            now = self._monotonic()
            if not lane.backoff.ready(now):
                lane.counters["send-cycles-skipped"] += 1
                return SinkCycle(name, send_skipped=True)
            cycle = Cycle()
            handled: set[int] = set()
            ended: Delivery | None = None
            try:
                rec = self._spool.newest(sink=name)
                if rec is not None:
                    handled.add(rec.seq)
                    ended = self._lane_deliver(lane, rec, cycle, with_state=True)
                if ended in (None, Delivery.SENT, Delivery.DEAD):
                    ended = drain_backlog(
                        lambda n: self._spool.pending(limit=n, sink=name),
                        lambda r: self._lane_deliver(lane, r, cycle, with_state=False), cycle,
                        handled, rate=self.config.backlog_rate, interval=self._interval,
                        drain_until=drain_until, stop=self._stop)
            except SpoolError as exc:  # the spool logged it once; the next cycle tries again
                log.debug("%s: send cycle ended by the spool: %s", name, exc)
                return SinkCycle(name, cycle.sent, cycle.acked, cycle.dead, False, None)
            if ended is Delivery.FAILED:
                lane.counters["send-cycles-failed"] += 1
                delay = lane.backoff.failed(now, self._interval, self._backoff_cap, self._rng,
                                            cycle.failure)
                log_cycle_failure(name, cycle.failure, lane.backoff.streak, delay)
            else:
                lane.backoff.succeeded()  # the lane's FaultLog says "recovered", once
            return SinkCycle(name, cycle.sent, cycle.acked, cycle.dead, False, cycle.failure)

    def _lane_deliver(self, lane: Lane, rec: Record, cycle: Cycle, *,
                      with_state: bool) -> Delivery:
        name = lane.sink.name
        try:
            snap = Snapshot.from_msgpack(rec.payload)
        except SnapshotFormatError as exc:
            self._bump("records-undecodable")
            return self._lane_dead(rec.seq, f"snapshot does not decode: {exc}", name, cycle)
        trusted = self._trusted_snapshot(snap)
        if trusted is None:
            return Delivery.HELD
        if isinstance(trusted, str):
            self._bump("records-unrecoverable-time")
            return self._lane_dead(rec.seq, trusted, name, cycle)
        # spool-seq as the heartbeat's window metrics had it: with the device (and the
        # recorder's window-seq) the key a receiver deduplicates a resend on (docs/otlp.md)
        metrics = {SPOOL_SEQ: float(rec.seq), **window_metrics(trusted)}
        if with_state:
            metrics.update(self._state_metrics())
        try:
            body = lane.sink.payload(trusted, metrics)
        except (OtlpMissingError, ValueError, OverflowError) as exc:
            lane.counters["records-unbuildable"] += 1
            return self._lane_dead(rec.seq, f"cannot build a {name} message: {exc}", name, cycle)
        cycle.requests += 1
        result = lane.sink.send(body)
        self._time.learn(result.server_time)
        if result.ok:
            lane.faults.ok()
            cycle.sent += 1
            try:
                acked = self._spool.ack(rec.seq, sink=name)
            except SpoolError as exc:
                # acked in memory; a crash before the cursor is written sends it again (the
                # sink's receivers get it at least once: docs/otlp.md)
                log.debug("%s: ack of record %d not yet durable: %s", name, rec.seq, exc)
                acked = True
            if acked:
                cycle.acked += 1
            return Delivery.SENT
        lane.faults.failed(*describe_sink_failure(result, sink=name))
        if result.outcome is Outcome.FATAL:
            return self._lane_dead(rec.seq, f"{result.error_code}: {result.message}", name,
                                   cycle)
        cycle.failure = result
        return Delivery.FAILED

    def _lane_dead(self, seq: int, reason: str, sink: str, cycle: Cycle) -> Delivery:
        if self._dead_letter(seq, reason, sink):
            cycle.dead += 1
        return Delivery.DEAD

    # -- figures -------------------------------------------------------------------------------

    def _lane_figure_names(self) -> tuple[str, ...]:
        """Every name ``_lane_figures`` gives, fixed for the agent's life (the sinks' and lanes'
        counters are fixed sets): the heartbeat keeps room for each (``record.py``)."""
        names: list[str] = []
        if len(self.config.sinks) > 1:
            names += [f"{name}-{key.replace('_', '-')}" for name in self.config.sinks
                      for key in _SPOOL_FIGURES]
        for lane in self._lanes:
            names += [f"{lane.sink.name}-{key}" for key in (*lane.sink.stats(), *lane.counters)]
        return tuple(names)

    def _lane_figures(self) -> dict[str, float]:
        """Per sink, as AgentMetrics names ``<sink>-<figure>``: its spool cursor's figures
        (with two or more sinks), its sender's counters and its cycles."""
        out: dict[str, float] = {}
        names = self.config.sinks
        if len(names) > 1:
            try:
                for name in names:
                    stats = self._spool.sink_stats(name)
                    for key in _SPOOL_FIGURES:
                        out[f"{name}-{key.replace('_', '-')}"] = float(stats[key])
            except SpoolClosedError:
                pass
        for lane in self._lanes:
            figures = {**lane.sink.stats(), **lane.counters}
            for key, value in figures.items():
                out[f"{lane.sink.name}-{key}"] = float(value)
        return out
