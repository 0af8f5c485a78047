"""Agent: a real recorder, a real spool on disk, real boto3 over HTTP to a real endpoint.

``EndpointServer`` (SigV4, validation, SQLite) checks what was stored; ``ScriptedServer`` plays
failures (throttling, 5xx, slow answers, resets, validation errors, expired signatures) and
records every request body, so the order and content of what the agent sent are asserted.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import sqlite3
import stat
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from scripted_server import Action, ScriptedServer

from edgetelemetry import Recorder, Snapshot
from edgetelemetry.agent import Agent, AgentClosedError
from edgetelemetry.agent.clock import phase
from edgetelemetry.agent.config import ConfigError
from edgetelemetry.agent.spool import Spool
from edgetelemetry.agent.state import STATE_FILE
from edgetelemetry.heartbeat import HeartbeatValidationError, SplitLimits
from edgetelemetry.server import EndpointServer, Store
from edgetelemetry.server.store.codec import Point, decode_points

AKID = "AKIDAGENTTEST001"
SECRET = "agent/test+secret-0001"
DEVICE = "cam-1"
FLEET = "fleet-a"
MIN_2020 = datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()
METRIC_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGETELEMETRY_"):
            monkeypatch.delenv(name)


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[EndpointServer]:
    srv = EndpointServer(str(tmp_path / "store.sqlite3"), credentials={AKID: SECRET})
    srv.store.register_fleet(FLEET)
    srv.store.register_devices(FLEET, [DEVICE])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(name="scripted")
def scripted_fixture() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture(name="rec")
def rec_fixture() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


def make_agent(tmp_path: Path, url: str, rec: Recorder, **kw: Any) -> Agent:
    """Fast settings: no fsync (tmp), one attempt per send, no backoff, no cycle backoff."""
    settings: dict[str, Any] = dict(
        device_name=DEVICE, fleet=FLEET, endpoint_url=url, spool_dir=tmp_path / "spool",
        aws_access_key_id=AKID, aws_secret_access_key=SECRET, fsync="never",
        backlog_rate=1000, jitter=0, max_attempts=1, backoff_base_s=0, backoff_cap_s=0,
        connect_timeout_s=1, read_timeout_s=1, send_backoff_cap_s=0,
    )
    settings.update(kw)
    return Agent(rec, **settings)


def agent_metrics(body: dict[str, Any]) -> dict[str, float]:
    return {m["MetricName"]: m["Value"] for m in body.get("AgentMetrics", ())}


def window_requests(srv: ScriptedServer, ok_only: bool = True) -> list[dict[str, Any]]:
    """Bodies of requests that carried a window (``spool-seq``), in arrival order."""
    out = []
    for r in srv.requests:
        if ok_only and not (r.action.kind == "answer" and r.action.status == 200
                            and r.action.delay_s < 1):
            continue
        body = r.json
        if "spool-seq" in agent_metrics(body):
            out.append(body)
    return out


def spool_seqs(bodies: list[dict[str, Any]]) -> list[int]:
    return [int(agent_metrics(b)["spool-seq"]) for b in bodies]


def spool_key(body: dict[str, Any]) -> tuple[int, int, int]:
    """(record seq, part, parts) of a window request, from its ``spool-seq`` metric."""
    (metric,) = [m for m in body["AgentMetrics"] if m["MetricName"] == "spool-seq"]
    _, part, parts = metric["Dimension"].split("/")
    return int(metric["Value"]), int(part), int(parts)


def stored_points(conn: sqlite3.Connection, metric: str | None = None) -> list[Point]:
    """The points of every stored heartbeat (of one metric), in the order the endpoint received
    them (the store's schema: docs/store.md)."""
    rows = conn.execute("SELECT device_id, ts, points FROM heartbeats ORDER BY device_id, number")
    numbers: dict[int, set[int]] = {}
    for device_id, number in conn.execute(
        "SELECT device_id, number FROM series WHERE ? IS NULL OR metric = ?", (metric, metric)
    ):
        numbers.setdefault(device_id, set()).add(number)
    return [p for device_id, ts, blob in rows
            for p in decode_points(blob, ts, numbers.get(device_id, set()))]


def stored_spool_seqs(store_path: str) -> list[int]:
    """spool-seq values in the order the endpoint received them."""
    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as conn:
        return [int(value) for _, value, _ in stored_points(conn, "spool-seq")]


def all_stored_times(store_path: str) -> list[float]:
    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as conn:
        times = [ts for _, _, ts in stored_points(conn)]
        for row in conn.execute("SELECT latest_inference, latest_sample_time FROM models"):
            times += [v for v in row if v is not None]
        for row in conn.execute("SELECT start_time, end_time FROM deployment_results"):
            times += [v for v in row if v is not None]
    return times


class FakeClock:
    """Wall = real time + ``offset``; ``mono`` = real monotonic + ``mono_offset``."""

    def __init__(self, offset: float = 0.0, base: float | None = None) -> None:
        self.offset = offset
        self.mono_offset = 0.0
        self.base = base  # a fixed wall origin instead of real time (an unset clock)
        self._t0 = time.monotonic()

    def wall(self) -> float:
        if self.base is not None:
            return self.base + (time.monotonic() - self._t0) + self.offset
        return time.time() + self.offset

    def mono(self) -> float:
        return time.monotonic() + self.mono_offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.mono_offset += seconds


DEPLOYMENT = {
    "DeploymentName": "resnet-v2",
    "DeploymentStatus": "SUCCESS",
    "DeploymentStatusMessage": "all models deployed",
    "DeploymentStartTime": datetime.now(timezone.utc) - timedelta(minutes=2),
    "DeploymentEndTime": datetime.now(timezone.utc) - timedelta(minutes=1),
    "DeploymentModels": [{"ModelHandle": "resnet18-v2", "ModelName": "resnet18",
                          "ModelVersion": "2.0", "DesiredState": "DEPLOY", "State": "DEPLOY",
                          "Status": "SUCCESS"}],
}


# -- against the real endpoint --------------------------------------------------------------

def test_heartbeats_arrive_with_counts_and_valid_agent_metrics(
        tmp_path: Path, server: EndpointServer, rec: Recorder) -> None:
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    conf = rec.histogram("confidence", model="resnet18", version="1.0", dimension="camera-front")
    with make_agent(tmp_path, server.url, rec) as agent:
        conf.record(0.9)  # a window lists only series with activity (issue 11)
        for v in range(1, 51):
            lat.record(float(v))
        lat.record(float("nan"))
        first = agent.tick()
        lat.record(7.0)
        second = agent.tick()
        assert first.failure is None and second.failure is None
        assert first.records_acked == second.records_acked == 1
        assert first.window == (rec.recorder_id, 0) and second.window == (rec.recorder_id, 1)
        stats = agent.stats()
    store = server.store
    counts = [p.value for p in store.metric_series(DEVICE, "resnet18", "latency-ms-count")]
    assert sum(counts) == 51  # the close() window included
    p99 = store.metric_series(DEVICE, "resnet18", "latency-ms-p99")[0].value
    assert 49 * 0.98 <= p99 <= 50
    assert [p.dimension for p in store.metric_series(DEVICE, "resnet18",
                                                     "confidence-count")][0] == "camera-front"
    rejected = store.metric_series(DEVICE, None, "rejected-nan")
    assert rejected[0].value == 1
    # AgentMetrics: the window's own figures with every window, the agent's with the first.
    names = {"records-drained", "dropped-ring-full", "rejected-nan", "ring-high-water",
             "spool-bytes", "spool-files", "oldest-unsent-age-s", "send-attempts",
             "send-failures-throttled", "corruption-events", "evicted-records", "dead-letters",
             "clock-jumps", "recorder-memory-bytes", "spool-seq", "window-seq"}
    for name in names:
        assert store.metric_series(DEVICE, None, name), name
    import re
    assert all(re.match(METRIC_NAME, n) and 4 <= len(n) <= 100 for n in stats)
    windows = store.metric_series(DEVICE, None, "window-seq")
    assert {(p.dimension, p.value) for p in windows} >= {(rec.recorder_id, 0.0),
                                                          (rec.recorder_id, 1.0)}
    assert stats["spool-records"] == 0 and stats["send-attempts"] >= 3
    models = store.models(DEVICE)
    assert models[0].name == "resnet18" and models[0].latest_inference is not None
    assert abs(models[0].latest_inference - time.time()) < 30


def test_a_heartbeat_every_interval_without_traffic(
        tmp_path: Path, server: EndpointServer, rec: Recorder) -> None:
    agent = make_agent(tmp_path, server.url, rec, interval=1).start()
    try:
        deadline = time.monotonic() + 6
        while server.store.heartbeat_count(DEVICE) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        agent.close()
    # a status heartbeat first (learns the endpoint's time), then one per interval
    assert server.store.heartbeat_count(DEVICE) >= 4
    assert len(server.store.metric_series(DEVICE, None, "spool-seq")) >= 3


def test_outage_sends_the_fresh_window_first_then_the_backlog_oldest_first(
        tmp_path: Path, rec: Recorder) -> None:
    store = Store(str(tmp_path / "store.sqlite3"))
    store.register_fleet(FLEET)
    store.register_devices(FLEET, [DEVICE])
    server = EndpointServer(credentials={AKID: SECRET}, store=store)
    server.start()
    port = server.port
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    # refused connections fail at once; the read timeout only has to outlast a busy machine
    # (at 1 s the restarted endpoint's first answers timed out under a loaded CI run)
    agent = make_agent(tmp_path, server.url, rec, read_timeout_s=10)
    try:
        lat.record(1.0)
        assert agent.tick().records_acked == 1
        server.stop()  # the endpoint goes away: connections are refused
        for i in range(4):
            lat.record_many([1.0] * (i + 2))
            result = agent.tick()
            assert result.failure is not None and result.records_acked == 0
        assert agent.stats()["spool-records"] == 4
        assert agent.stats()["send-failures-connection"] >= 4
        server = EndpointServer(port=port, credentials={AKID: SECRET}, store=store)
        server.start()
        lat.record_many([1.0] * 6)
        result = agent.tick()
        assert result.records_acked == 5 and result.failure is None
        assert agent.stats()["spool-records"] == 0
    finally:
        agent.close()
        server.stop()
    order = stored_spool_seqs(store.path)
    assert order == [1, 6, 2, 3, 4, 5, 7]  # then close() spooled and sent window 7
    counts = store.metric_series(DEVICE, "resnet18", "latency-ms-count")
    assert sum(p.value for p in counts) == 1 + 2 + 3 + 4 + 5 + 6
    store.close()


def test_deployment_result_is_kept_until_a_heartbeat_carrying_it_is_acknowledged(
        tmp_path: Path, rec: Recorder) -> None:
    store = Store(str(tmp_path / "store.sqlite3"))
    store.register_fleet(FLEET)
    store.register_devices(FLEET, [DEVICE])
    server = EndpointServer(credentials={AKID: SECRET}, store=store)
    server.start()
    port = server.port
    server.stop()
    agent = make_agent(tmp_path, f"http://127.0.0.1:{port}", rec)
    agent.report_deployment(DEPLOYMENT)
    assert agent.tick().failure is not None
    assert agent.stats()["deployment-results-pending"] == 1
    agent.close()  # restart: the result is on disk
    state = (tmp_path / "spool" / STATE_FILE)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert b"resnet-v2" in state.read_bytes()

    server = EndpointServer(port=port, credentials={AKID: SECRET}, store=store)
    server.start()
    try:
        with make_agent(tmp_path, server.url, rec) as agent:
            assert agent.stats()["deployment-results-pending"] == 1
            assert agent.tick().failure is None
            assert agent.stats()["deployment-results-pending"] == 0
            agent.tick()
        results = store.deployment_results(DEVICE)
        assert len(results) == 1
        assert results[0].deployment_name == "resnet-v2"
        assert results[0].models[0]["ModelHandle"] == "resnet18-v2"
        assert b"resnet-v2" not in state.read_bytes()
    finally:
        server.stop()
        store.close()


def test_report_deployment_is_validated(tmp_path: Path, scripted: ScriptedServer,
                                        rec: Recorder) -> None:
    with make_agent(tmp_path, scripted.url, rec) as agent:
        with pytest.raises(HeartbeatValidationError) as err:
            agent.report_deployment({**DEPLOYMENT, "DeploymentName": "bad_name"})
        assert err.value.path == "DeploymentResult.DeploymentName"
        with pytest.raises(HeartbeatValidationError):
            agent.report_deployment({"DeploymentStatus": "SUCCESS"})
        with pytest.raises(HeartbeatValidationError) as err:
            agent.report_deployment({**DEPLOYMENT, "DeploymentStartTime": 1000.0})
        assert err.value.rule == "min_timestamp"
        assert agent.stats()["deployment-results-pending"] == 0


def test_model_state_survives_a_restart(tmp_path: Path, scripted: ScriptedServer,
                                        rec: Recorder) -> None:
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    with make_agent(tmp_path, scripted.url, rec) as agent:
        lat.record(3.0)
        agent.tick()
        sampled_at = time.time() - 30
        agent.report_sample("resnet18", "1.0", sampled_at)
        agent.tick()
    # the second window had no values, so it lists no model (issue 11): the last request
    # naming the model is the first window's or the status heartbeat with the sample time
    last = [r.json for r in scripted.requests if r.json.get("Models")][-1]
    inference = last["Models"][0]["LatestInference"]
    assert abs(inference - time.time()) < 30
    scripted.requests.clear()
    with Recorder() as quiet:  # a new process: no traffic at all
        with make_agent(tmp_path, scripted.url, quiet) as agent:
            agent.tick()
    # the window had no traffic: the remembered times go out in the cycle's status heartbeat
    bodies = [r.json for r in scripted.requests if r.json.get("Models")]
    assert bodies and not any("spool-seq" in agent_metrics(b) for b in bodies)
    model = bodies[0]["Models"][0]
    assert model["ModelName"] == "resnet18" and model["ModelMetrics"] == []
    assert model["LatestInference"] == inference
    # whole seconds up to botocore 1.43, fractional after: the wire resolution is botocore's
    assert 0 <= sampled_at - model["LatestSampleTime"] < 1


# -- failures, against the scripted server ----------------------------------------------------

def test_throttling_5xx_slow_and_reset_are_retried_later_and_nothing_is_lost(
        tmp_path: Path, scripted: ScriptedServer, rec: Recorder) -> None:
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    scripted.script(Action.ok(),  # the status heartbeat that learns the time
                    Action.throttle(), Action.internal_service(), Action.slow(3.0),
                    Action.reset(), Action.unavailable(), Action.close())
    recorded = 0
    with make_agent(tmp_path, scripted.url, rec, read_timeout_s=0.5) as agent:
        for i in range(6):
            lat.record_many([float(i)] * (i + 1))
            recorded += i + 1
            assert agent.tick().failure is not None
        assert agent.stats()["spool-records"] == 6
        lat.record(9.0)
        recorded += 1
        result = agent.tick()
        assert result.failure is None and result.records_acked == 7
        stats = agent.stats()
    assert spool_seqs(window_requests(scripted))[:7] == [7, 1, 2, 3, 4, 5, 6]
    total = 0.0
    for body in window_requests(scripted):
        for model in body["Models"]:
            total += sum(m["Value"] for m in model["ModelMetrics"]
                         if m["MetricName"] == "latency-ms-count")
    assert total == recorded
    assert stats["send-failures-throttled"] == 1 and stats["send-failures-5xx"] == 2
    assert stats["send-failures-timeout"] == 1 and stats["send-failures-connection"] == 2
    assert stats["dead-letters"] == 0


def test_validation_exception_dead_letters_the_record_and_reports_it(
        tmp_path: Path, scripted: ScriptedServer, rec: Recorder) -> None:
    scripted.script(Action.ok(), Action.validation("Models[0].ModelName: bad"))
    with make_agent(tmp_path, scripted.url, rec) as agent:
        first = agent.tick()
        assert first.records_dead_lettered == 1 and first.failure is None
        assert agent.stats()["spool-records"] == 0
        agent.tick()
        agent.tick()
    dead = list((tmp_path / "spool" / "dead").iterdir())
    assert len(dead) == 1
    meta = json.loads(dead[0].read_bytes().split(b"\n", 1)[0])
    assert "ValidationException" in meta["reason"] and meta["seq"] == 1
    last = agent_metrics(window_requests(scripted)[-1])
    assert last["dead-letters"] == 1 and last["send-failures-validation"] == 1
    assert 1 not in spool_seqs(window_requests(scripted))  # never sent again


def test_expired_signature_is_corrected_and_delivered_with_the_right_times(
        tmp_path: Path, scripted: ScriptedServer, rec: Recorder) -> None:
    clock = FakeClock(offset=-2 * 3600)  # the device is two hours behind
    scripted.script(Action.signature_expired(time.time()))
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    lat.record(1.0)
    with make_agent(tmp_path, scripted.url, rec, max_attempts=2, clock=clock.wall,
                    monotonic=clock.mono) as agent:
        result = agent.tick()
        assert result.failure is None and result.records_acked == 1
        assert agent.sender.clock_offset_s == pytest.approx(2 * 3600, abs=5)
        stats = agent.stats()
    assert stats["clock-corrections"] == 1 and stats["windows-restamped"] >= 1
    signed = [r.amz_date for r in scripted.requests[1:]]
    from scripted_server import amz_date_epoch
    assert all(abs(amz_date_epoch(d) - time.time()) < 60 for d in signed if d)
    body = window_requests(scripted)[0]
    stamp = body["Models"][0]["ModelMetrics"][0]["Timestamp"]
    assert abs(stamp - time.time()) < 60  # stamped by the endpoint's clock, not the device's


def test_failed_cycles_back_off_exponentially_up_to_the_cap(
        tmp_path: Path, rec: Recorder) -> None:
    clock = FakeClock()
    with ScriptedServer(default=Action.unavailable()) as srv:
        with make_agent(tmp_path, srv.url, rec, interval=10, send_backoff_cap_s=35,
                        clock=clock.wall, monotonic=clock.mono) as agent:
            sent_at = []
            for _ in range(40):
                before = len(srv.requests)
                result = agent.tick()
                if len(srv.requests) > before:
                    sent_at.append(clock.mono_offset)
                else:
                    assert result.send_skipped
                clock.advance(10)
            gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
            assert gaps[0] == 10  # the first retry is the next interval
            assert max(gaps) <= 35 + 10  # capped (plus the tick granularity)
            assert sum(gaps[3:]) / len(gaps[3:]) > 15  # later waits grow
            assert agent.stats()["send-cycles-skipped"] > 0
            assert agent.stats()["spool-records"] == 40


def test_backlog_is_drained_at_a_bounded_rate(tmp_path: Path, scripted: ScriptedServer,
                                              rec: Recorder) -> None:
    with make_agent(tmp_path, scripted.url, rec, backlog_rate=20, interval=1) as agent:
        for _ in range(30):
            agent.tick(send=False)
        result = agent.tick()
        assert result.failure is None
        # the fresh window, then at most rate * interval / 2 backlog requests this cycle
        assert 5 <= result.records_acked - 1 <= 10
        times = [r.received_at for r in scripted.requests[2:]]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert min(gaps) >= 0.04  # 1 / backlog_rate, less scheduling noise
        assert agent.stats()["spool-records"] == 31 - result.records_acked


def spy_on_pending(spool: Spool, limits: list[int | None]) -> None:
    """Record the ``limit`` of every ``pending()`` call (a spy: the real method still runs)."""
    pending = spool.pending

    def spy(limit: int | None = None, **kw: Any) -> Any:
        limits.append(limit)
        return pending(limit=limit, **kw)

    spool.pending = spy  # type: ignore[method-assign]


def test_memory_stays_flat_and_the_backlog_is_read_in_pages_during_an_outage(
        tmp_path: Path, rec: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    # pytest keeps every captured log record: 200 "send cycle failed" warnings would be growth
    caplog.set_level(logging.ERROR, logger="edgetelemetry")
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    with socket.socket() as probe:  # a port nobody listens on: every send is refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    limits: list[int | None] = []
    with make_agent(tmp_path, url, rec) as agent:
        spy_on_pending(agent.spool, limits)
        for _ in range(60):  # warm up botocore's and the spool's lazily built state
            lat.record_many([1.0, 2.0, 3.0])
            agent.tick()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(200):
            lat.record_many([1.0, 2.0, 3.0])
            assert agent.tick().failure is not None
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        # botocore's own bounded caches (regexes, timestamps, serializer shapes) fill up over the
        # first few hundred calls whatever we do; count everything else
        growth = sum(
            s.size_diff
            for s in after.compare_to(before, "filename")
            if "site-packages" not in s.traceback[0].filename
        )
        # 200 windows spooled, none held in memory: what grows is the spool's index of pending
        # records (28 bytes each) and noise; one snapshot kept per window would be ~1 MB.
        assert growth < 96 * 1024, growth
        assert agent.stats()["spool-records"] == 260
    with ScriptedServer() as srv:
        with make_agent(tmp_path, srv.url, rec) as agent:
            spy_on_pending(agent.spool, limits)
            while agent.stats()["spool-records"]:
                assert agent.tick().failure is None
        # 260 + the first close()'s window, then this tick's and this close()'s: each once
        seqs = sorted(spool_seqs(window_requests(srv)))  # (a restart resumes at seq 4097)
        assert len(seqs) == len(set(seqs)) == 263 and seqs[:261] == list(range(1, 262))
    assert limits and all(limit is not None and limit <= 8 for limit in limits)


def test_a_record_split_over_requests_resumes_where_it_failed(
        tmp_path: Path, scripted: ScriptedServer, rec: Recorder) -> None:
    for i in range(6):
        rec.histogram(f"metric{i}", model="resnet18", version="1.0").record(float(i))
    scripted.script(Action.ok(), Action.ok(), Action.unavailable())
    with make_agent(tmp_path, scripted.url, rec,
                    split_limits=SplitLimits(max_model_metrics=20)) as agent:
        assert agent.tick().failure is not None  # part 1 of record 1 in, part 2 refused
        assert agent.tick().failure is None
    delivered = [m for r in scripted.requests if r.action.status == 200
                 for model in r.json.get("Models", ()) for m in model["ModelMetrics"]]
    # window 1: 6 series x 11 statistics in four requests (the 2nd failed once); windows 2
    # and 3 (the close) had no activity: they list no series (issue 11).  Nothing twice.
    assert len(delivered) == 66
    # record 1's first request (with its AgentMetrics) is not sent again: only the rest is
    keys = [spool_key(b) for b in window_requests(scripted)]
    assert len(keys) == len(set(keys))
    assert [seq for seq, part, _ in keys if part == 1] == [1, 2, 3]
    for seq in (1, 2, 3):
        parts = sorted((part, n) for s, part, n in keys if s == seq)
        assert parts == [(k, len(parts)) for k in range(1, len(parts) + 1)]


def test_undecodable_and_unrecoverable_records_are_dead_lettered(
        tmp_path: Path, scripted: ScriptedServer, rec: Recorder) -> None:
    spool_dir = tmp_path / "spool"
    with Recorder() as other:
        snap = other.snapshot()
    # A window from another boot stamped by an unset clock: its time cannot be recovered.
    src = snap.sources[0]
    old = Snapshot.from_dict({**snap.to_dict(),
                              "sources": [[src.recorder_id, "another-boot", 0, 0]],
                              "window": {"start_mono_ns": 1, "end_mono_ns": 2,
                                         "start_wall_ns": 10**9, "end_wall_ns": 2 * 10**9}})
    with Spool(spool_dir, fsync="never") as spool:
        spool.append(b"not a snapshot")
        spool.append(old.to_msgpack())
        spool.append(snap.to_msgpack())  # this one is fine
    with make_agent(tmp_path, scripted.url, rec) as agent:
        agent.tick()
        stats = agent.stats()
    assert stats["records-undecodable"] == 1 and stats["records-unrecoverable-time"] == 1
    assert stats["dead-letters"] == 2 and stats["spool-records"] == 0
    seqs = sorted(spool_seqs(window_requests(scripted)))
    assert seqs[0] == 3 and len(seqs) == 3  # then this agent's own two windows


# -- time ---------------------------------------------------------------------------------------

def test_clock_jumps_are_counted_and_never_reach_a_timestamp(
        tmp_path: Path, server: EndpointServer, rec: Recorder) -> None:
    clock = FakeClock()
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    start = time.time()
    with make_agent(tmp_path, server.url, rec, max_attempts=2, clock=clock.wall,
                    monotonic=clock.mono) as agent:
        lat.record(1.0)
        assert agent.tick().failure is None
        for jump in (86400, -86400, -86400, 86400):
            clock.offset += jump
            lat.record(2.0)
            result = agent.tick()
            assert result.failure is None and result.records_acked == 1
        stats = agent.stats()
    end = time.time()
    assert stats["clock-jumps"] == 4
    times = all_stored_times(server.store.path)
    assert times and all(start - 5 <= t <= end + 5 for t in times), times
    counts = server.store.metric_series(DEVICE, "resnet18", "latency-ms-count")
    assert sum(p.value for p in counts) == 5


def test_an_unset_clock_holds_windows_and_never_sends_1970(
        tmp_path: Path, server: EndpointServer, rec: Recorder) -> None:
    clock = FakeClock(base=1000.0)  # a device without RTC, booted in 1970
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    start = time.time()
    with make_agent(tmp_path, server.url, rec, max_attempts=2, clock=clock.wall,
                    monotonic=clock.mono) as agent:
        lat.record_many([1.0, 2.0])
        assert agent.tick(send=False).spooled_seq == 1  # offline: held, stamped 1970
        lat.record(3.0)
        result = agent.tick()  # learns the time from the endpoint, re-stamps, delivers
        assert result.failure is None and result.records_acked == 2
        stats = agent.stats()
    assert stats["clock-unset"] >= 2 and stats["windows-restamped"] >= 2
    assert stats["clock-corrections"] >= 1 and stats["spool-records"] == 0
    times = all_stored_times(server.store.path)
    assert times and all(start - 5 <= t <= time.time() + 5 for t in times)
    counts = server.store.metric_series(DEVICE, "resnet18", "latency-ms-count")
    assert sum(p.value for p in counts) == 3


def test_snapshot_wall_times_derive_from_the_agent_clock(
        tmp_path: Path, scripted: ScriptedServer, rec: Recorder) -> None:
    clock = FakeClock(offset=-1000.0)  # 17 minutes behind: stamped by this clock, not C's
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    lat.record(1.0)
    with make_agent(tmp_path, scripted.url, rec, clock=clock.wall, monotonic=clock.mono,
                    clock_tolerance_s=3600) as agent:
        agent.tick(send=False)
        snap = Snapshot.from_msgpack(agent.spool.newest().payload)  # type: ignore[union-attr]
    assert abs(snap.end_wall_ns / 1e9 - clock.wall()) < 5
    assert snap.end_wall_ns - snap.end_mono_ns == snap.start_wall_ns - snap.start_mono_ns
    s = snap.get("resnet18", "1.0", "latency")
    assert s is not None and s.last_wall_ns is not None and s.last_mono_ns is not None
    assert s.last_wall_ns - s.last_mono_ns == snap.end_wall_ns - snap.end_mono_ns


# -- lifecycle ------------------------------------------------------------------------------------

def test_close_flushes_and_sends_the_current_window_within_two_seconds(
        tmp_path: Path, server: EndpointServer, rec: Recorder) -> None:
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    agent = make_agent(tmp_path, server.url, rec, interval=3600).start()
    lat.record_many([1.0] * 9)
    t0 = time.monotonic()
    agent.close()
    assert time.monotonic() - t0 < 2.0
    counts = server.store.metric_series(DEVICE, "resnet18", "latency-ms-count")
    assert sum(p.value for p in counts) == 9
    with pytest.raises(AgentClosedError):
        agent.tick()
    agent.close()  # idempotent


def test_close_with_a_hanging_endpoint_still_spools_within_two_seconds(
        tmp_path: Path, rec: Recorder) -> None:
    lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    with ScriptedServer(default=Action.slow(10.0)) as srv:
        agent = make_agent(tmp_path, srv.url, rec, interval=3600, read_timeout_s=30)
        lat.record_many([1.0] * 4)
        t0 = time.monotonic()
        agent.close()
        assert time.monotonic() - t0 < 2.3
    with Spool(tmp_path / "spool", fsync="never") as spool:
        pending = spool.pending()
    assert len(pending) == 1
    snap = Snapshot.from_msgpack(pending[0].payload)
    assert snap.get("resnet18", "1.0", "latency").count == 4  # type: ignore[union-attr]


def test_settings_resolve_through_agent_config(tmp_path: Path, scripted: ScriptedServer,
                                               rec: Recorder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGETELEMETRY_INTERVAL_S", "30")
    monkeypatch.setenv("EDGETELEMETRY_BACKLOG_RATE", "7")
    with make_agent(tmp_path, scripted.url, rec, backlog_rate=None) as agent:
        assert agent.config.interval_s == 30 and agent.config.backlog_rate == 7
    with make_agent(tmp_path, scripted.url, rec, interval=5) as agent:
        assert agent.config.interval_s == 5  # keyword arguments win
        config = agent.config
    with Agent(rec, config=config, interval=9) as agent:
        assert agent.config.interval_s == 9 and agent.config.device_name == DEVICE
    with pytest.raises(ConfigError, match="backlog_rat"):
        make_agent(tmp_path, scripted.url, rec, backlog_rat=3)


def test_the_phase_is_deterministic_per_device() -> None:
    assert phase("cam-1", FLEET) == phase("cam-1", FLEET)
    phases = {phase(f"cam-{i}", FLEET) for i in range(200)}
    assert len(phases) == 200 and all(0 <= p < 1 for p in phases)
    assert sum(p < 0.5 for p in phases) in range(70, 131)  # spread over the interval


def test_a_damaged_state_file_is_set_aside(tmp_path: Path, scripted: ScriptedServer,
                                           rec: Recorder) -> None:
    (tmp_path / "spool").mkdir(mode=0o700)
    (tmp_path / "spool" / STATE_FILE).write_bytes(b"edgetelemetry-agent-state 1 0\n{}")
    with make_agent(tmp_path, scripted.url, rec) as agent:
        assert agent.stats()["corruption-events"] == 1
        assert agent.tick().failure is None
    quarantined = [p.name for p in (tmp_path / "spool" / "quarantine").iterdir()]
    assert any(STATE_FILE in name for name in quarantined)


def test_sigterm_closes_the_agent_then_runs_the_previous_handler(
        tmp_path: Path, scripted: ScriptedServer, rec: Recorder) -> None:
    calls: list[int] = []

    def previous(signum: int, frame: Any) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGTERM, previous)
    try:
        agent = make_agent(tmp_path, scripted.url, rec, install_signal_handlers=True)
        rec.histogram("latency", unit="ms", model="resnet18", version="1.0").record(2.0)
        signal.raise_signal(signal.SIGTERM)
        assert agent.closed and calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is previous  # restored by close()
        assert spool_seqs(window_requests(scripted)) == [1]  # flushed and sent
    finally:
        signal.signal(signal.SIGTERM, old)


def test_sigterm_inside_a_tick_waits_for_the_tick_to_finish(
        tmp_path: Path, scripted: ScriptedServer, rec: Recorder) -> None:
    calls: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        agent = make_agent(tmp_path, scripted.url, rec, install_signal_handlers=True)
        snapshot = rec.snapshot

        def interrupted_snapshot() -> Snapshot:  # the signal lands mid-step, once
            rec.snapshot = snapshot  # type: ignore[method-assign]
            signal.raise_signal(signal.SIGTERM)
            assert not agent.closed and not calls
            return snapshot()

        rec.snapshot = interrupted_snapshot  # type: ignore[method-assign]
        result = agent.tick()
        assert result.spooled_seq == 1 and result.records_acked == 1
        assert spool_seqs(window_requests(scripted)) == [1, 2]  # the tick's, then close()'s
        assert agent.closed and calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)
