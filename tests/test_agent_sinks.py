"""The agent with sinks beside SendHeartbeat: a real endpoint for the heartbeats and a real
OTLP/HTTP receiver on loopback (tests/otlp_receiver.py, decoding with the official classes)
that fails, refuses, hangs and rejects on demand.

Delivery is checked window by window: every window the agent spooled reaches each sink, once
per outage-free run (at most one more per kill -9), with its ``window-seq``; the spool's
per-sink figures account for every record (delivered + lost + dead letters + pending).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from otlp_receiver import OtlpReceiver
from test_agent import (  # noqa: F401 - the fixtures are used by name
    AKID,
    DEVICE,
    FLEET,
    SECRET,
    _clean_env,
    rec_fixture,
    server_fixture,
)
from test_agent import make_agent as make_heartbeat_agent
from test_agent_crash import _env as crash_env
from test_agent_crash import _wait_for

from edgetelemetry import Recorder
from edgetelemetry.agent import Agent, ConfigError
from edgetelemetry.server import EndpointServer

HERE = Path(__file__).resolve().parent
TOKEN = "Bearer otlp-token-5f1c"


@pytest.fixture(name="otlp")
def otlp_fixture() -> Iterator[OtlpReceiver]:
    with OtlpReceiver(required_headers={"authorization": TOKEN}) as rx:
        yield rx


def make_agent(tmp_path: Path, server_url: str, otlp_url: str, rec: Recorder,
               **kw: Any) -> Agent:
    """test_agent's fast settings, and the OTLP sink.  The endpoint here is real and healthy
    (its outages are stops: refused at once), so its answer gets up to 10 s: on a loaded
    2-core machine a 1 s read timeout failed cycles these tests expect to succeed."""
    settings: dict[str, Any] = dict(otlp_endpoint=otlp_url, otlp_headers={"Authorization": TOKEN},
                                    otlp_timeout_s=0.5, read_timeout_s=10)
    settings.update(kw)
    return make_heartbeat_agent(tmp_path, server_url, rec, **settings)


def stored_windows(server: EndpointServer) -> Counter[int]:
    return Counter(int(p.value) for p in server.store.metric_series(DEVICE, None, "spool-seq"))


def otlp_windows(rx: OtlpReceiver) -> Counter[int]:
    return Counter(spool for _, _, spool in rx.windows())


def accounted(agent: Agent, sink: str, appended: int) -> dict[str, int]:
    st = agent.spool.sink_stats(sink)
    assert st["delivered"] + st["lost"] + st["dead_letters"] + st["records"] == appended, st
    return st


def record_some(rec: Recorder, n: int) -> None:
    rec.histogram("latency", unit="ms", model="resnet18", version="1.0").record_many(
        [float(i % 50 + 1) for i in range(n)])


def test_each_window_reaches_both_sinks_once(tmp_path: Path, server: EndpointServer,
                                             otlp: OtlpReceiver, rec: Recorder,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgetelemetry")
    with make_agent(tmp_path, server.url, otlp.url, rec) as agent:
        seqs = []
        for i in range(5):
            record_some(rec, 10 + i)
            result = agent.tick()
            assert result.failure is None and result.sinks[0].failure is None
            assert result.sinks[0].records_acked == 1
            seqs.append(result.spooled_seq)
        assert agent.spool.stats()["records"] == 0
        otlp_st = accounted(agent, "otlp", 5)
        assert otlp_st["delivered"] == 5 and otlp_st["records"] == 0
        figures = agent.stats()
        assert figures["otlp-send-successes"] == 5 and figures["otlp-delivered"] == 5
        assert figures["sagemaker-edge-delivered"] == 5
    # close() spooled and sent one more window: the last, to both
    assert otlp_windows(otlp) == stored_windows(server) == Counter(seqs + [max(seqs) + 1])
    first = otlp.received[0]
    assert first.encoding == "gzip" and first.headers["content-type"] == "application/x-protobuf"
    counts = [m.exponential_histogram.data_points[0].count
              for r in otlp.received for m in r.request.resource_metrics[0].scope_metrics[0].metrics
              if m.name == "latency"]
    # the last window had no values: a snapshot lists only the series that had values in its
    # window (issue 11), so it reaches the collector with no latency point at all
    assert counts == [10, 11, 12, 13, 14]
    windows = [w for _, w, _ in otlp.windows()]
    assert windows == sorted(windows) and len(set(windows)) == 6  # one recorder, in order
    assert TOKEN not in caplog.text and "otlp-token" not in repr(agent.config)


@pytest.mark.parametrize("outage", ["fail", "refuse", "hang"])
def test_outage_backlog_delivery_with_exact_accounting(tmp_path: Path, server: EndpointServer,
                                                       otlp: OtlpReceiver, rec: Recorder,
                                                       outage: str) -> None:
    with make_agent(tmp_path, server.url, otlp.url, rec) as agent:
        otlp.set_mode(outage)
        spooled = []
        for _ in range(6):
            record_some(rec, 3)
            result = agent.tick()
            spooled.append(result.spooled_seq)
            assert result.failure is None  # the heartbeat is not held by the collector
            cycle = result.sinks[0]
            assert cycle.records_acked == 0 and (cycle.failure or cycle.send_skipped)
        assert stored_windows(server) == Counter(spooled)
        held = accounted(agent, "otlp", 6)
        assert held["records"] == 6 and agent.spool.stats()["records"] == 6
        assert agent.spool.sink_stats("sagemaker-edge")["records"] == 0
        otlp.set_mode("ok")
        record_some(rec, 3)
        result = agent.tick()
        spooled.append(result.spooled_seq)
        assert result.sinks[0].records_acked == 7  # the newest, then the backlog oldest first
        assert otlp_windows(otlp) == Counter(spooled)  # every window once, none lost
        order = [spool for _, _, spool in otlp.windows()]
        assert order == [spooled[-1], *spooled[:-1]]
        done = accounted(agent, "otlp", 7)
        assert done["delivered"] == 7 and done["lost"] == 0 and done["records"] == 0
        assert agent.spool.stats()["records"] == 0
        failures = agent.stats()
        kind = {"fail": "otlp-send-failures-5xx", "refuse": "otlp-send-failures-connection",
                "hang": "otlp-send-failures-timeout"}[outage]
        assert failures[kind] >= 1


def test_one_sink_down_while_the_other_delivers(tmp_path: Path, otlp: OtlpReceiver,
                                                rec: Recorder) -> None:
    """The endpoint goes away, then the collector: each keeps its own backlog, and each
    catches up without the other resending anything."""
    store = str(tmp_path / "store.sqlite3")
    server = EndpointServer(store, credentials={AKID: SECRET})
    server.store.register_fleet(FLEET)
    server.store.register_devices(FLEET, [DEVICE])
    server.start()
    port = server.port
    try:
        with make_agent(tmp_path, server.url, otlp.url, rec) as agent:
            server.stop()
            phase_a = [agent.tick().spooled_seq for _ in range(4)]
            assert otlp_windows(otlp) == Counter(phase_a)
            assert agent.spool.sink_stats("sagemaker-edge")["records"] == 4
            server = EndpointServer(store, port=port, credentials={AKID: SECRET})
            server.start()
            otlp.set_mode("refuse")
            phase_b = [agent.tick().spooled_seq for _ in range(3)]
            assert stored_windows(server) == Counter(phase_a + phase_b)
            assert agent.spool.sink_stats("otlp")["records"] == 3
            assert agent.spool.stats()["records"] == 3  # what the endpoint has is let go
            otlp.set_mode("ok")
            last = agent.tick().spooled_seq
            everything = Counter(phase_a + phase_b + [last])
            assert otlp_windows(otlp) == stored_windows(server) == everything
            for sink in ("otlp", "sagemaker-edge"):
                assert accounted(agent, sink, 8)["records"] == 0
    finally:
        server.stop()


def test_a_sink_outage_is_one_warning_per_class_and_one_line_when_it_clears(
        tmp_path: Path, server: EndpointServer, otlp: OtlpReceiver, rec: Recorder,
        caplog: pytest.LogCaptureFixture) -> None:
    """A collector that stays down says so once per class of failure (issue 12 item 6), as
    the heartbeat does: not once per outage cycle, not once per record."""
    caplog.set_level(logging.DEBUG, logger="edgetelemetry")
    with make_agent(tmp_path, server.url, otlp.url, rec, send_backoff_cap_s=0.0) as agent:
        agent.tick()
        otlp.set_mode("fail")  # 503s
        for _ in range(3):
            assert agent.tick().sinks[0].failure is not None
        otlp.set_mode("refuse")  # then no collector at all: another class
        for _ in range(3):
            assert agent.tick().sinks[0].failure is not None
        otlp.set_mode("ok")
        assert agent.tick().sinks[0].records_acked >= 1
        assert accounted(agent, "otlp", 8)["records"] == 0

    def lines(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == level and r.getMessage().startswith("otlp")]

    warnings = lines(logging.WARNING)
    assert len(warnings) == 2, warnings
    assert "otlp delivery failing (receiver error)" in warnings[0]
    assert "otlp delivery failing (unreachable)" in warnings[1]
    assert TOKEN not in caplog.text
    assert [m for m in lines(logging.INFO) if "recovered" in m] == [
        "otlp delivery recovered after 3 failure(s) of class unreachable"]


def test_the_heartbeat_carries_every_sink_figure(tmp_path: Path, server: EndpointServer,
                                                 otlp: OtlpReceiver, rec: Recorder) -> None:
    """The other sinks' figures go out with the heartbeat's newest record, in the room its
    split keeps for the agent's figures (heartbeat/record.py): none is dropped for lack of it."""
    ticks = 3
    with make_agent(tmp_path, server.url, otlp.url, rec) as agent:
        for _ in range(ticks):
            record_some(rec, 5)
            assert agent.tick().requests_sent >= 1
        sent = agent.stats()
    names = [k for k in sent if k.startswith(("otlp-", "sagemaker-edge-"))]
    assert "otlp-send-successes" in names and "sagemaker-edge-delivered" in names
    for name in names:
        # one point per tick at least: each tick's window request carried it (a status
        # heartbeat goes out only when no window did)
        points = server.store.metric_series(DEVICE, None, name)
        assert len(points) >= ticks, f"{name}: {len(points)} points for {ticks} windows"


def test_a_hanging_collector_does_not_hold_the_heartbeat(tmp_path: Path,
                                                         server: EndpointServer,
                                                         otlp: OtlpReceiver,
                                                         rec: Recorder) -> None:
    """Started: each sink on its own thread.  The collector hangs; heartbeats keep their
    schedule; once it answers again its backlog drains."""
    agent = make_agent(tmp_path, server.url, otlp.url, rec, interval=1, otlp_timeout_s=5)
    try:
        otlp.set_mode("hang")
        agent.start()
        deadline = time.monotonic() + 30
        while sum(stored_windows(server).values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum(stored_windows(server).values()) >= 4  # 4 s of heartbeats during the hang
        assert not otlp.received
        otlp.set_mode("ok")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
                agent.spool.sink_stats("otlp")["records"] or not otlp.received):
            time.sleep(0.1)
        assert agent.spool.sink_stats("otlp")["records"] == 0  # the backlog drained
        figures = agent.stats()  # the hung request ended by a timeout or the drop
        assert figures["otlp-send-failures-timeout"] + figures["otlp-send-failures-connection"] >= 1
    finally:
        agent.close(timeout=5)
    delivered, stored = otlp_windows(otlp), stored_windows(server)
    assert max(delivered.values()) == 1  # a dropped (hung) request is no duplicate
    assert len(set(stored) - set(delivered)) <= 1  # at most the window close() flushed


def test_refused_data_is_dead_lettered_for_that_sink_only(tmp_path: Path,
                                                          server: EndpointServer,
                                                          otlp: OtlpReceiver,
                                                          rec: Recorder) -> None:
    with make_agent(tmp_path, server.url, otlp.url, rec) as agent:
        otlp.set_mode("reject")
        seq = agent.tick().spooled_seq
        assert stored_windows(server) == Counter([seq])
        st = accounted(agent, "otlp", 1)
        assert st["dead_letters"] == 1 and st["records"] == 0
        dead = sorted(os.listdir(tmp_path / "spool" / "dead"))
        assert dead == [f"dl-{seq:016x}-otlp.rec"]
        otlp.set_mode("partial")
        agent.tick()
        assert agent.stats()["otlp-points-rejected"] == 1  # accepted: not retried
        assert accounted(agent, "otlp", 2)["delivered"] == 1


def test_config_errors_are_clear(tmp_path: Path, rec: Recorder) -> None:
    base = dict(device_name=DEVICE, fleet=FLEET, endpoint_url="http://127.0.0.1:9",
                spool_dir=tmp_path / "s", fsync="never")
    with pytest.raises(ConfigError, match="otlp_headers set but otlp_endpoint is not"):
        Agent(rec, **base, otlp_headers={"authorization": TOKEN})
    with pytest.raises(ConfigError, match="otlp_cert_file and otlp_key_file go together"):
        Agent(rec, **base, otlp_endpoint="https://127.0.0.1:4318", otlp_cert_file="/c.pem")
    with pytest.raises(ConfigError, match="did you mean 'otlp_endpoint'"):
        Agent(rec, **base, otlp_endpont="http://127.0.0.1:4318")
    with pytest.raises(ConfigError) as info:
        Agent(rec, **base, otlp_endpoint="http://127.0.0.1:4318",
              otlp_headers={"authorization": "Bearer \n" + TOKEN})
    assert "otlp-token" not in str(info.value)  # a secret is never echoed


def test_headers_from_the_environment(tmp_path: Path, otlp: OtlpReceiver, rec: Recorder,
                                      server: EndpointServer,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGETELEMETRY_OTLP_ENDPOINT", f"http://127.0.0.1:{otlp.port}")
    monkeypatch.setenv("EDGETELEMETRY_OTLP_HEADERS", "Authorization=" + TOKEN.replace(" ", "%20"))
    monkeypatch.setenv("EDGETELEMETRY_OTLP_COMPRESSION", "none")
    with Agent(rec, device_name=DEVICE, fleet=FLEET, endpoint_url=server.url,
               spool_dir=tmp_path / "spool", fsync="never", aws_access_key_id=AKID,
               aws_secret_access_key=SECRET) as agent:
        assert agent.config.otlp_endpoint == otlp.url  # /v1/metrics added
        assert agent.tick().sinks[0].records_acked == 1
    assert otlp.received[0].encoding is None
    raw = otlp.received[0].request.SerializeToString()
    assert otlp.received[0].body_bytes == len(raw)
    assert gzip.compress(raw)  # the same request would have gone gzip'ed


# -- kill -9 -----------------------------------------------------------------------------------

def _env(server: EndpointServer, otlp: OtlpReceiver) -> dict[str, str]:
    env = crash_env(server)  # the crash test's fast settings, for this test's device
    env.update({
        "EDGETELEMETRY_DEVICE_NAME": DEVICE,
        "EDGETELEMETRY_FLEET_NAME": FLEET,
        "EDGETELEMETRY_AWS_ACCESS_KEY_ID": AKID,
        "EDGETELEMETRY_AWS_SECRET_ACCESS_KEY": SECRET,
        "EDGETELEMETRY_OTLP_ENDPOINT": otlp.url,
        "EDGETELEMETRY_OTLP_HEADERS": "authorization=" + TOKEN.replace(" ", "%20"),
        "EDGETELEMETRY_OTLP_TIMEOUT_S": "1",
    })
    return env


def _spawn(mode: str, tmp: Path, env: dict[str, str], seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "agent_crash_child.py"), mode, str(tmp / "spool"),
         str(tmp / "spooled.log"), str(seed)], stdout=subprocess.PIPE, env=env)


def test_kill_9_mid_run_the_sink_cursors_are_durable(tmp_path: Path, server: EndpointServer,
                                                     otlp: OtlpReceiver) -> None:
    """A real agent process with both sinks, SIGKILLed at random points while the collector
    comes and goes (so the two cursors differ when it dies); then a clean run drains.  Every
    spooled window reached both sinks; duplicates at most one per kill per sink."""
    rng = random.Random(20261201)
    env = _env(server, otlp)
    kills = 0
    started = time.monotonic()
    for round_no in range(8):
        if time.monotonic() - started > 25:
            break
        otlp.set_mode("ok" if round_no % 3 == 0 else rng.choice(["fail", "refuse", "ok"]))
        proc = _spawn("crash", tmp_path, env, round_no)
        try:
            _wait_for(proc, b"READY")
            time.sleep(rng.uniform(0.05, 0.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        kills += 1
    otlp.set_mode("ok")
    proc = _spawn("drain", tmp_path, env, 999)
    try:
        _wait_for(proc, b"DONE", timeout=60)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    spooled: dict[int, tuple[str, int]] = {}
    for line in (tmp_path / "spooled.log").read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "A":
            spooled[int(parts[1])] = (parts[2], int(parts[3]))
    assert len(spooled) > 20, "the child hardly ran: the test proves nothing"
    to_otlp, to_endpoint = otlp_windows(otlp), stored_windows(server)
    for name, delivered in (("otlp", to_otlp), ("endpoint", to_endpoint)):
        missing = sorted(set(spooled) - set(delivered))
        assert not missing, f"{name}: spooled but never delivered: {missing}"
        duplicates = sum(n - 1 for n in delivered.values())
        assert duplicates <= kills, (name, duplicates, kills)
    by_window = Counter((rid, w) for rid, w, _ in otlp.windows())
    assert all(by_window[w] >= 1 for w in spooled.values())


def test_a_config_file_holding_sink_secrets_must_be_private(tmp_path: Path) -> None:
    from edgetelemetry.agent import AgentConfig

    path = tmp_path / "agent.json"
    path.write_text(json.dumps({
        "device_name": "cam-01", "fleet_name": "line-1", "endpoint_url": "http://127.0.0.1:9",
        "otlp_endpoint": "http://127.0.0.1:4318", "otlp_headers": {"authorization": TOKEN},
        "mqtt_url": "mqtt://127.0.0.1", "mqtt_password": "mqtt-pass-77"}))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="mqtt_password, otlp_headers but is accessible") as info:
        AgentConfig.load(path, env={})
    assert "otlp-token" not in str(info.value) and "mqtt-pass" not in str(info.value)
    path.chmod(0o600)
    config = AgentConfig.load(path, env={})
    assert config.sinks == ("sagemaker-edge", "otlp", "mqtt")
    assert "otlp-token" not in repr(config) and "mqtt-pass" not in repr(config)


def test_a_sink_whose_package_is_missing_stops_the_agent_at_once(
        tmp_path: Path, rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # as if not installed
    settings: dict[str, Any] = dict(device_name=DEVICE, fleet=FLEET, fsync="never",
                                    endpoint_url="http://127.0.0.1:9",
                                    spool_dir=tmp_path / "spool", mqtt_url="mqtt://127.0.0.1")
    with pytest.raises(ConfigError, match=r"pip install 'edgetelemetry\[mqtt\]'"):
        Agent(rec, **settings)
    monkeypatch.delitem(sys.modules, "paho.mqtt.client")
    agent = Agent(rec, **settings)  # the spool was let go
    assert agent.config.sinks == ("sagemaker-edge", "mqtt")
    agent.close(timeout=0.1)
