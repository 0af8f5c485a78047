"""The real-server harness (realservices.py): each server starts on loopback, answers a real
client, runs as an unprivileged user when the tests run as root, and is gone afterwards: its port
closed, its processes ended, its folder removed - also when the test using it fails."""

from __future__ import annotations

import json
import os
import pwd
import queue
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
import realservices
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from realservices import (
    Mosquitto,
    NginxProxy,
    PostgreSQL,
    Prometheus,
    Service,
    pid_alive,
    port_open,
)

TESTS = Path(__file__).resolve().parent


def running_record(service: Service) -> dict[str, Any]:
    """What to check once the server is stopped: its processes, port and folder now."""
    return {"pids": sorted(service.pids()), "port": service.port, "workdir": str(service.workdir)}


def assert_gone(record: dict[str, Any]) -> None:
    assert record["pids"], "the server had no process to check"
    assert not [pid for pid in record["pids"] if pid_alive(pid)]
    assert not port_open(record["port"])
    assert not Path(record["workdir"]).exists()


def assert_unprivileged(service: Service) -> None:
    expected = pwd.getpwnam(realservices.SERVICE_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    checked = 0
    for pid in service.pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue  # a backend that ended meanwhile
        uids = status.split("\nUid:")[1].split()[:2]
        assert [int(u) for u in uids] == [expected, expected], (service.name, pid)
        checked += 1
    assert checked


class Upstream:
    """A tiny HTTP server on loopback that answers with its name and remembers the requests."""

    def __init__(self, name: str, body: Callable[[], bytes] | None = None) -> None:
        self.name = name
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(dict(self.headers))
                data = body() if body else outer.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstreams() -> Iterator[list[Upstream]]:
    servers = [Upstream("a"), Upstream("b")]
    yield servers
    for server in servers:
        server.close()


# ---- PostgreSQL ----


def test_postgresql_answers_select_1_over_tcp_with_a_password(
    postgresql_server: PostgreSQL, postgresql_url: str
) -> None:
    with psycopg.connect(postgresql_url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        address, database = conn.execute(
            "SELECT host(inet_server_addr()), current_database()"
        ).fetchone()
    assert address == "127.0.0.1"  # TCP, not the unix socket
    assert database == urllib.parse.urlsplit(postgresql_url).path.lstrip("/")
    no_password = postgresql_url.replace(f":{postgresql_server.password}@", "@")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(no_password, connect_timeout=10)
    assert_unprivileged(postgresql_server)


@pytest.mark.parametrize("run", [1, 2])
def test_postgresql_url_is_a_fresh_database_for_each_test(postgresql_url: str, run: int) -> None:
    # the second run would find the first one's table if the database were shared
    with psycopg.connect(postgresql_url) as conn:
        conn.execute("CREATE TABLE harness (run int)")
        conn.execute("INSERT INTO harness VALUES (%s)", (run,))
        assert conn.execute("SELECT run FROM harness").fetchall() == [(run,)]


def test_postgresql_restarts_with_its_data_then_stops_with_its_backends_and_files() -> None:
    with PostgreSQL() as server:
        with psycopg.connect(server.url()) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (1)")
        port = server.port
        server.restart()
        assert server.port == port
        conn = psycopg.connect(server.url())  # an open session: "fast" shutdown must end it
        assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]
        record = running_record(server)
        assert len(record["pids"]) > 3  # the postmaster, its workers and our backend
    assert_gone(record)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()


# ---- Prometheus ----


def test_prometheus_scrapes_a_loopback_target_and_answers_promql(
    prometheus_server: Callable[..., Prometheus],
) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("harness_value", "a value the test sets", registry=registry)
    gauge.set(42.5)
    target = Upstream("target", body=lambda: generate_latest(registry))
    try:
        prom = prometheus_server([target.address], scrape_interval="500ms")
        assert_unprivileged(prom)
        [sample] = prom.wait_for('harness_value{job="test"}')
        assert float(sample["value"][1]) == 42.5
        assert sample["metric"]["instance"] == target.address
        assert float(prom.query('up{job="test"}')[0]["value"][1]) == 1
        gauge.set(7)  # a later scrape brings the new value
        assert prom.wait_for("harness_value == 7")
        record = running_record(prom)
        prom.stop()
        assert_gone(record)
    finally:
        target.close()


# ---- nginx ----


def get(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        return str(response.read().decode())


def test_nginx_balances_over_two_upstreams_and_keeps_the_host_header(
    nginx_proxy: Callable[..., NginxProxy], upstreams: list[Upstream]
) -> None:
    proxy = nginx_proxy([u.address for u in upstreams])
    assert_unprivileged(proxy)
    answers = Counter(get(proxy.url + "/anything") for _ in range(10))
    assert answers == {"a": 5, "b": 5}  # round robin, one worker
    headers = upstreams[0].requests[0]
    assert headers["Host"] == f"127.0.0.1:{proxy.port}"  # what a SigV4 client signed
    assert headers["X-Forwarded-Proto"] == "http"
    record = running_record(proxy)
    proxy.stop()
    assert_gone(record)


def test_nginx_terminates_tls_with_its_own_certificate_authority(
    nginx_proxy: Callable[..., NginxProxy], upstreams: list[Upstream]
) -> None:
    proxy = nginx_proxy([u.address for u in upstreams], tls=True)
    assert proxy.url.startswith("https://127.0.0.1:")
    answers = Counter(get(proxy.url, proxy.ssl_context()) for _ in range(4))
    assert answers == {"a": 2, "b": 2}
    assert upstreams[1].requests[0]["X-Forwarded-Proto"] == "https"
    with pytest.raises(urllib.error.URLError) as failure:
        get(proxy.url, ssl.create_default_context())  # the system's CAs do not know it
    assert isinstance(failure.value.reason, ssl.SSLCertVerificationError)


def test_only_loopback_addresses_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        NginxProxy(["10.0.0.1:80"])
    with pytest.raises(ValueError, match="loopback"):
        Prometheus(["example.com:9090"])
    NginxProxy(["localhost:1", "[::1]:2", "127.0.0.2:3"])  # accepted, not started


# ---- mosquitto ----


def mqtt_round_trip(broker: Mosquitto, topic: str) -> tuple[str, bytes, int]:
    received: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="harness-sub")
    sub.on_message = lambda _c, _u, msg: received.put((msg.topic, msg.payload, msg.qos))
    sub.on_subscribe = lambda *_args: subscribed.set()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="harness-pub")
    try:
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        sub.subscribe(topic, qos=1)
        assert subscribed.wait(10), "no SUBACK"
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        pub.publish(topic, b"heartbeat", qos=1).wait_for_publish(10)
        return received.get(timeout=10)
    finally:
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()


def test_mosquitto_publish_subscribe_round_trip(mosquitto_broker: Mosquitto) -> None:
    assert mqtt_round_trip(mosquitto_broker, "harness/one") == ("harness/one", b"heartbeat", 1)
    assert_unprivileged(mosquitto_broker)


def test_mosquitto_restarts_on_its_port_then_stops() -> None:
    with Mosquitto() as broker:
        port = broker.port
        broker.restart()
        assert broker.port == port
        assert mqtt_round_trip(broker, "harness/two")[1] == b"heartbeat"
        record = running_record(broker)
    assert_gone(record)


# ---- the fixtures' own life cycle ----


def test_a_missing_server_fails_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(realservices, "SYSTEM_DIRS", ())
    monkeypatch.setattr(realservices, "POSTGRESQL_DIRS", str(tmp_path / "*" / "bin"))
    services: list[tuple[Service, str]] = [
        (PostgreSQL(), "postgresql"),
        (Prometheus(["127.0.0.1:1"]), "prometheus"),
        (NginxProxy(["127.0.0.1:1"]), "nginx"),
        (Mosquitto(), "mosquitto"),
    ]
    for service, package in services:
        # a failure, never a skip: CI installs the servers, a skip would hide that it did not
        hint = f"apt-get install --no-install-recommends {package}`"
        with pytest.raises(pytest.fail.Exception, match=hint):
            realservices.start_or_fail(service)
        assert service.workdir is None and service.process is None


INNER_TEST = """
import json, os

def test_fails_with_every_server_up(postgresql_url, postgresql_server, mosquitto_broker,
                                    prometheus_server, nginx_proxy):
    prom = prometheus_server(["127.0.0.1:%d" % mosquitto_broker.port])
    proxy = nginx_proxy(["127.0.0.1:%d" % prom.port], tls=True)
    record = {s.name: {"pids": sorted(s.pids()), "port": s.port, "workdir": str(s.workdir)}
              for s in (postgresql_server, mosquitto_broker, prom, proxy)}
    with open(os.environ["HARNESS_RECORD"], "w") as out:
        json.dump(record, out)
    assert False, "fails on purpose"
"""


def test_fixtures_stop_every_server_when_the_test_using_them_fails(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    record_path = tmp_path / "record.json"
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, HARNESS_RECORD=str(record_path))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "realservices",
         "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed" in run.stdout and "fails on purpose" in run.stdout
    record = json.loads(record_path.read_text())
    assert sorted(record) == ["mosquitto", "nginx", "postgresql", "prometheus"]
    for server in record.values():
        assert_gone(server)
