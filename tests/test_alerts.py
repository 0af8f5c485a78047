"""Alerts (``edgetelemetry.server.alerts``): rules in the endpoint's configuration, evaluated by
the server from what real boto3 heartbeats stored, shown at ``/fleet/api/alerts`` and POSTed to
a loopback webhook receiver, which is down at first and comes up later."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest_server import CREDENTIALS, REGION
from store_backends import registered
from test_fleet import FLEET, ShiftedClock
from test_fleet_page import get
from test_metrics import entry, send
from test_server_cli import write_private

from edgetelemetry.server import EndpointServer
from edgetelemetry.server.alerts import (
    AlertEvaluator,
    FleetFacts,
    Rule,
    Webhook,
    evaluate,
    load_alert_config,
    parse_alert_config,
)
from edgetelemetry.server.cli import main as serve_main
from edgetelemetry.server.store import DeploymentResultInfo, DeviceInfo, LatestPoint, open_store

SECRET_HEADER = "Bearer hook-secret-4f1e"


class Receiver:
    """A loopback webhook receiver on a fixed port, started and stopped by the test; it answers
    ``statuses`` in turn (then 200) and keeps each JSON body with its headers."""

    def __init__(self, port: int, statuses: tuple[int, ...] = ()) -> None:
        self.port = port
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], Any]] = []
        self.answered: list[int] = []
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.answered.append(status)
                if status == 200:
                    receiver.received.append((dict(self.headers.items()), json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def wait(self, n: int, timeout: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return [doc for _, doc in self.received]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(name="receiver_port")
def receiver_port_fixture() -> Iterator[int]:
    yield free_port()


def config(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "interval_s": 0.2,
        "webhook": {
            "url": f"http://127.0.0.1:{port}/hook",
            "timeout_s": 2,
            "headers": {"Authorization": SECRET_HEADER},
        },
        "rules": [
            {"name": "silent", "kind": "device_silent", "heartbeat_interval_s": 60, "intervals": 3},
            {"name": "slow", "kind": "p99_above", "metric": "latency-ms", "threshold": 100},
            {"name": "drops", "kind": "drops"},
            {"name": "dead-letters", "kind": "dead_letters", "severity": "critical"},
            {"name": "deploy", "kind": "deployment_failed"},
        ],
        **extra,
    }


def test_alerts_fire_once_reach_a_webhook_that_was_down_and_resolve(
    tmp_path: Path, receiver_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = ShiftedClock()
    server = EndpointServer(
        str(tmp_path / "a.sqlite3"),
        credentials=CREDENTIALS,
        region=REGION,
        clock=clock,
        alerts=parse_alert_config(config(receiver_port)),
    )
    assert server.alerts is not None and server.alerts.webhook is not None
    server.alerts.webhook.first_backoff_s = 0.1  # the test's patience, not production's
    server.alerts.webhook.max_backoff_s = 0.4
    registered(server.store, FLEET, ["cam-1", "cam-2"])
    server.start()
    receiver = Receiver(receiver_port, statuses=(503,))
    try:
        now = time.time()
        send(
            server,
            "cam-1",
            [entry("resnet18", "1.0", now, 250.0, dropped=2)],
            agent={"dead-letters": 1},
        )
        send(server, "cam-2", [entry("resnet18", "1.0", now, 20.0)])
        # the receiver is down: passes go on, the notification waits and is retried
        wait_until(lambda: server.alerts is not None and server.alerts.passes >= 3)
        webhook = server.alerts.webhook
        wait_until(lambda: webhook.stats.retries >= 2)
        assert webhook.stats.delivered == 0 and webhook.pending() == 1
        firing = get(server.port, "/fleet/api/alerts").json()
        assert firing["enabled"] is True
        assert sorted((a["rule"], a["labels"]["device"]) for a in firing["firing"]) == [
            ("dead-letters", "cam-1"),
            ("drops", "cam-1"),
            ("slow", "cam-1"),
        ]
        # the receiver comes up, answers 503 once, then takes it
        receiver.start()
        docs = receiver.wait(1)
        assert receiver.answered[:2] == [503, 200]
        assert len(docs) == 1
        assert sorted(a["rule"] for a in docs[0]["firing"]) == ["dead-letters", "drops", "slow"]
        slow = next(a for a in docs[0]["firing"] if a["rule"] == "slow")
        assert slow["value"] == 250.0 and slow["labels"]["model"] == "resnet18"
        assert slow["labels"]["metric"] == "latency-ms" and "p99" in slow["summary"]
        headers = receiver.received[0][0]
        assert headers["Authorization"] == SECRET_HEADER
        assert headers["Content-Type"] == "application/json"
        # fired once: later passes with the same facts send nothing new
        passes = server.alerts.passes
        wait_until(lambda: server.alerts is not None and server.alerts.passes >= passes + 3)
        assert len(receiver.received) == 1
        # the device recovers: one resolution document
        send(
            server,
            "cam-1",
            [entry("resnet18", "1.0", time.time(), 30.0)],
            agent={"dead-letters": 0},
        )
        docs = receiver.wait(2)
        assert len(docs) == 2 and docs[1]["firing"] == []
        assert sorted(a["rule"] for a in docs[1]["resolved"]) == ["dead-letters", "drops", "slow"]
        # silence: ten minutes later on the server clock both devices are silent
        clock.offset = 600.0
        docs = receiver.wait(3)
        assert sorted(a["labels"]["device"] for a in docs[2]["firing"]) == ["cam-1", "cam-2"]
        assert {a["rule"] for a in docs[2]["firing"]} == {"silent"}
    finally:
        server.stop()
        receiver.stop()
    assert SECRET_HEADER not in caplog.text and "hook-secret" not in caplog.text
    assert "unreachable" in caplog.text  # the outage was logged, without the header


def test_a_webhook_notify_never_blocks_and_drops_the_oldest_when_full() -> None:
    port = free_port()  # nothing listens
    hook = Webhook(
        f"http://user:pw@127.0.0.1:{port}/x?token=abc",
        {"X-Key": "s3cret"},
        queue_size=3,
        first_backoff_s=10,
    )
    assert hook.shown_url == f"http://127.0.0.1:{port}/x" and "s3cret" not in repr(hook)
    started = time.monotonic()
    for i in range(5):
        hook.notify({"n": i})
    assert time.monotonic() - started < 0.5  # not started: nothing sent, nothing waited for
    assert hook.pending() == 3 and hook.stats.dropped_full == 2


def test_a_refused_notification_is_not_retried_and_old_ones_expire(receiver_port: int) -> None:
    receiver = Receiver(receiver_port, statuses=(400,)).start()
    hook = Webhook(f"http://127.0.0.1:{receiver_port}/", first_backoff_s=0.05, max_age_s=0.3)
    hook.start()
    try:
        hook.notify({"n": 1})
        hook.notify({"n": 2})
        assert [d["n"] for d in receiver.wait(1)] == [2]
        assert hook.stats.refused == 1 and receiver.answered == [400, 200]
        receiver.stop()
        hook.notify({"n": 3})
        wait_until(lambda: hook.stats.dropped_expired == 1)
        assert hook.pending() == 0
    finally:
        hook.stop()
        receiver.stop()


def facts(now: float) -> FleetFacts:
    devices = [
        DeviceInfo(f"cam-{i}", FLEET, True, now - 9999, now - 10 * i, "1") for i in range(50)
    ]
    points = [
        LatestPoint(f"cam-{i}", "m", "1", "latency-ms-p99", "all", now, float(i)) for i in range(50)
    ]
    failed = {"cam-3": DeploymentResultInfo(now, "d7", "FAIL", "no space", now, now, [])}
    return FleetFacts(devices, points, [], failed)


def test_evaluation_is_bounded_per_pass_and_keeps_since() -> None:
    now = 1.7e9
    slow = Rule("slow", "p99_above", threshold=9.5)
    silent = Rule("silent", "device_silent", heartbeat_interval_s=100, intervals=2)
    deploy = Rule("deploy", "deployment_failed", severity="critical")
    alerts, over = evaluate([slow, silent, deploy], facts(now), now)
    assert over == 0
    assert len([a for a in alerts.values() if a.rule == "slow"]) == 40  # p99 10..49
    assert {dict(a.labels)["device"] for a in alerts.values() if a.rule == "silent"} == {
        f"cam-{i}" for i in range(21, 50)
    }  # 210 s > 200 s
    (failed,) = [a for a in alerts.values() if a.rule == "deploy"]
    assert dict(failed.labels)["deployment"] == "d7" and "no space" in failed.summary
    later, _ = evaluate([slow], facts(now), now + 60, alerts)
    assert {a.since for a in later.values()} == {now}
    capped, over = evaluate([slow, silent], facts(now), now, limit=10)
    assert len(capped) == 10 and over == 40 + 29 - 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rules": []}, "non-empty"),
        ({"rules": [{"name": "x", "kind": "loud"}]}, "kind must be one of"),
        ({"rules": [{"name": "x", "kind": "p99_above"}]}, "threshold is required"),
        ({"rules": [{"name": "x", "kind": "drops"}, {"name": "x", "kind": "drops"}]}, "twice"),
        ({"interval_s": 0}, "interval_s must be a positive"),
        ({"webhook": {"url": "ftp://x"}}, "webhook.url"),
        ({"webhook": {"url": "http://x", "headers": {"A": "b\r\nInjected: 1"}}}, "one-line"),
        ({"surprise": 1}, "unknown key 'surprise'"),
    ],
)
def test_bad_alert_configuration_says_what_is_wrong(change: dict[str, Any], message: str) -> None:
    doc = {**config(1), **change}
    with pytest.raises(ValueError, match=message) as info:
        parse_alert_config(doc)
    assert SECRET_HEADER not in str(info.value)


def test_serve_reads_a_private_alert_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_private(tmp_path / "alerts.json", config(1), mode=0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_alert_config(str(path))
    creds = write_private(tmp_path / "creds.json", {"AKIDEXAMPLE": "secret"})
    assert (
        serve_main(
            [
                "--credentials-file",
                str(creds),
                "--store",
                ":memory:",
                "--port",
                "0",
                "--alerts",
                str(path),
            ]
        )
        == 2
    )
    assert "chmod 600" in capsys.readouterr().err
    path.chmod(0o600)
    loaded = load_alert_config(str(path))
    assert [r.kind for r in loaded.rules] == [
        "device_silent",
        "p99_above",
        "drops",
        "dead_letters",
        "deployment_failed",
    ]
    assert SECRET_HEADER not in repr(loaded)


def test_without_alerts_the_page_says_so(tmp_path: Path) -> None:
    with EndpointServer(None, credentials=CREDENTIALS) as server:
        assert server.alerts is None
        assert get(server.port, "/fleet/api/alerts").json() == {"enabled": False, "firing": []}


def test_the_evaluator_survives_an_unavailable_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(str(tmp_path / "gone.sqlite3"))
    evaluator = AlertEvaluator(store, [Rule("d", "drops")], interval_s=0.05)
    evaluator.start()
    try:
        wait_until(lambda: evaluator.passes >= 2)
        store.close()  # every read now raises StoreError
        wait_until(lambda: "store unavailable" in caplog.text)
        assert evaluator.running
    finally:
        evaluator.stop()


@pytest.fixture(name="shared_target", params=["sqlite", "postgresql"])
def shared_target_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "shared.sqlite3")
    return str(request.getfixturevalue("postgresql_url"))


def test_replicas_sharing_a_store_send_each_alert_once(
    shared_target: str, receiver_port: int
) -> None:
    """Two endpoints on one store (SQLite file or PostgreSQL database), both evaluating: one
    holds the store's lead and sends; when it stops, the other takes over and sends."""
    receiver = Receiver(receiver_port).start()
    doc = config(receiver_port)
    doc["rules"] = [{"name": "drops", "kind": "drops"}]
    one = EndpointServer(
        shared_target, credentials=CREDENTIALS, region=REGION, alerts=parse_alert_config(doc)
    )
    registered(one.store, FLEET, ["cam-1", "cam-2"])
    two = EndpointServer(
        shared_target, credentials=CREDENTIALS, region=REGION, alerts=parse_alert_config(doc)
    )
    servers = [one, two]
    try:
        one.start()
        two.start()
        send(one, "cam-1", [entry("resnet18", "1.0", time.time(), 10.0, dropped=4)])
        docs = receiver.wait(1)
        evaluators = [s.alerts for s in servers if s.alerts is not None]
        assert len(evaluators) == 2
        # both show it, and run three more passes each
        wait_until(lambda: all([a.rule for a in e.firing()] == ["drops"] for e in evaluators))
        passes = [e.passes for e in evaluators]
        wait_until(lambda: all(e.passes >= n + 3 for e, n in zip(evaluators, passes)))
        assert len(receiver.received) == 1 and len(docs[0]["firing"]) == 1
        assert [e.leading for e in evaluators].count(True) == 1
        leader = next(s for s in servers if s.alerts and s.alerts.leading)
        other = two if leader is one else one
        leader.stop()
        servers.remove(leader)
        # the other takes the lead and sends what fires (a handover may repeat, never lose)
        docs = receiver.wait(2)
        assert len(docs) == 2 and [a["rule"] for a in docs[1]["firing"]] == ["drops"]
        assert other.alerts is not None and other.alerts.leading
        send(other, "cam-1", [entry("resnet18", "1.0", time.time(), 10.0)])
        docs = receiver.wait(3)
        assert len(docs) == 3 and [a["rule"] for a in docs[2]["resolved"]] == ["drops"]
    finally:
        for server in servers:
            server.stop()
        receiver.stop()
