"""``edgetelemetry serve`` as a process, embedded and ``--workers 2``: one-line errors, health
routes, TLS with a real TLS client, key rotation on SIGHUP, refused requests in the log; workers
on either store backend."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest_server import AKID, SECRET, client, heartbeat
from realservices import _write_self_signed_tls
from serve_procs import ServeProcess, serve_env, write_private
from store_backends import store_target_fixture  # noqa: F401 - the fixture

MODES = {"embedded": (), "workers": ("--workers", "2")}


def run_serve(
    args: list[str], cwd: Path, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgetelemetry", "serve", *args],
        capture_output=True, text=True, timeout=timeout, env=serve_env(), cwd=cwd,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    err = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("edgetelemetry serve: "), err
    for word in words:
        assert word in err, (word, err)
    return err


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    return write_private(tmp_path / "creds.json", {AKID: SECRET})


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "99999"], ["--port 99999"]),
        (["--port", "-1"], ["--port -1"]),
        (["--store", "/nonexistent/x"], ["/nonexistent/x", "no directory"]),
        (["--certfile", "/nonexistent/cert.pem", "--keyfile", "/nonexistent/key.pem"],
         ["/nonexistent/cert.pem"]),
    ],
)
def test_bad_options_are_one_line_errors(
    tmp_path: Path, creds: Path, mode: str, args: list[str], words: list[str]
) -> None:
    done = run_serve(["--credentials-file", str(creds), *args, *MODES[mode]], tmp_path)
    assert_one_line_error(done, *words)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_credentials_file_that_is_not_a_file(tmp_path: Path, mode: str, kind: str) -> None:
    path = tmp_path / "creds"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # opening it for reading used to block forever
    done = run_serve(["--credentials-file", str(path), "--store", str(tmp_path / "s.db"),
                      *MODES[mode]],
                     tmp_path, timeout=20)
    assert_one_line_error(done, str(path), "not a regular file")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_address_in_use_names_the_address(tmp_path: Path, creds: Path, mode: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve(["--credentials-file", str(creds), "--store", str(tmp_path / "s.db"),
                          "--port", str(port), *MODES[mode]], tmp_path)
    assert_one_line_error(done, f"127.0.0.1:{port}", "address already in use")


def test_workers_refuse_a_store_in_memory(tmp_path: Path, creds: Path) -> None:
    done = run_serve(["--credentials-file", str(creds), "--store", ":memory:", "--workers", "2"],
                     tmp_path)
    assert_one_line_error(done, ":memory:")


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("mode", sorted(MODES))
def test_health_routes_need_no_key_and_say_nothing_of_the_fleet(
    tmp_path: Path, mode: str
) -> None:
    with ServeProcess(tmp_path, *MODES[mode]) as serve:
        assert get(serve.url + "/healthz") == (200, {"status": "ok"})
        assert get(serve.url + "/readyz") == (200, {"status": "ready"})
        # and the operations still need a signature
        status, body = get(serve.url + "/SendHeartbeat")
        assert status == 404


def test_readyz_says_when_the_store_is_gone(tmp_path: Path) -> None:
    from edgetelemetry.server import EndpointServer

    with EndpointServer(None, credentials={AKID: SECRET}) as srv:
        assert get(srv.url + "/readyz")[0] == 200
        srv.store.close()  # what a store that cannot be reached looks like to the app
        assert get(srv.url + "/readyz") == (503, {"status": "store unreachable"})
        assert get(srv.url + "/healthz")[0] == 200


@pytest.mark.parametrize("mode", sorted(MODES))
def test_tls_with_a_real_tls_client(tmp_path: Path, mode: str) -> None:
    ca = _write_self_signed_tls(tmp_path, "127.0.0.1")
    with ServeProcess(
        tmp_path, "--certfile", str(tmp_path / "server.crt"), "--keyfile",
        str(tmp_path / "server.key"), *MODES[mode],
    ) as serve:
        assert serve.url.startswith("https://127.0.0.1:")
        edge = boto3.client(
            "sagemaker-edge", endpoint_url=serve.url, region_name="us-east-1",
            aws_access_key_id=AKID, aws_secret_access_key=SECRET, verify=str(ca),
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
        )
        answer = edge.send_heartbeat(**heartbeat())
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        context = ssl.create_default_context(cafile=str(ca))
        assert get(serve.url + "/healthz", context)[0] == 200
        # a client that does not trust the CA gets no answer at all
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(serve.url + "/healthz", timeout=10)
        # plain HTTP on the TLS port is not served
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(serve.url.replace("https", "http") + "/healthz", timeout=5)
    with ServeProcess(tmp_path / "plain", *MODES[mode]) as plain:
        assert plain.url.startswith("http://")


def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def accepted(url: str, key: str, secret: str) -> bool:
    try:
        client(url, key, secret).send_heartbeat(**heartbeat())
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "UnrecognizedClientException"
        return False
    return True


@pytest.mark.parametrize("mode", sorted(MODES))
def test_sighup_rotates_keys_without_a_restart(tmp_path: Path, mode: str) -> None:
    new_key, new_secret = "AKIDROTATED00002", "rotated-secret-2"
    with ServeProcess(tmp_path, *MODES[mode]) as serve:
        assert accepted(serve.url, AKID, SECRET)
        assert not accepted(serve.url, new_key, new_secret)
        write_private(serve.credentials_file, {new_key: new_secret})
        serve.signal(signal.SIGHUP)
        wait_until(lambda: accepted(serve.url, new_key, new_secret))
        wait_until(lambda: not accepted(serve.url, AKID, SECRET))
        # a broken file on the next SIGHUP: logged, and the keys in use stay
        serve.credentials_file.write_text("{not json")
        serve.signal(signal.SIGHUP)
        wait_until(lambda: "keeping the current keys" in serve.log())
        assert accepted(serve.url, new_key, new_secret)
        assert serve.proc is not None and serve.proc.poll() is None
        assert new_secret not in serve.log() and SECRET not in serve.log()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_refused_requests_are_logged_at_info_without_secrets(tmp_path: Path, mode: str) -> None:
    with ServeProcess(tmp_path, *MODES[mode]) as serve:
        with pytest.raises(ClientError):
            client(serve.url, secret="wrong-secret-xyz").send_heartbeat(**heartbeat())
        with pytest.raises(ClientError):
            client(serve.url).send_heartbeat(**heartbeat(device="ghost-9"))
        wait_until(lambda: "device=ghost-9" in serve.log())
        log = serve.log()
    lines = [line for line in log.splitlines() if " refused " in line]
    assert any(
        "INFO" in line and "403 InvalidSignatureException" in line and f"key={AKID}" in line
        for line in lines
    ), log[-2000:]
    assert any(
        "400 ValidationException" in line and "device=ghost-9" in line for line in lines
    ), log[-2000:]
    assert SECRET not in log and "wrong-secret-xyz" not in log and "Signature=" not in log


def test_behind_a_proxy_the_fleet_page_sees_the_forwarded_client() -> None:
    """Through a proxy on loopback every peer is 127.0.0.1: with trust_forwarded (serve
    --behind-proxy) the loopback-only fleet page judges the address the proxy forwarded."""
    from conftest_server import post

    from edgetelemetry.server import EndpointServer

    for trust, forwarded, allowed in ((False, None, True), (True, None, True),
                                      (True, "203.0.113.9", False),
                                      (True, "203.0.113.9, 127.0.0.1", True)):
        with EndpointServer(None, credentials={AKID: SECRET}, trust_forwarded=trust) as srv:
            headers = {"Host": f"127.0.0.1:{srv.port}"}
            if forwarded:
                headers["X-Forwarded-For"] = forwarded
            answer = post(srv.port, "fleet/api/status", b"", headers, method="GET")
        assert (answer.status == 200) == allowed, (trust, forwarded, answer.status)


def test_workers_on_either_backend_store_once_and_compact(
    tmp_path: Path, store_target: str
) -> None:
    """``serve --workers 2`` on a SQLite file and on PostgreSQL: the master migrates and
    registers, each worker opens its own store (a pool shared by its threads on PostgreSQL) and
    runs its own compactor.  Racing resends through both workers are stored once, an old
    heartbeat is rolled up in the background, and the workers close their stores on exit."""
    from edgetelemetry.server.store import open_read_only

    spool = uuid.uuid4().hex
    now = time.time()

    def keyed(seq: int, ts: float) -> dict[str, Any]:
        return heartbeat(AgentMetrics=[
            {"MetricName": "spool-seq", "Dimension": f"{spool}/1/1", "Value": float(seq),
             "Timestamp": ts},
            {"MetricName": "spool-bytes", "Value": 1.0, "Timestamp": ts, "Dimension": "all"},
        ])

    failures: list[BaseException] = []

    def send(url: str, seqs: list[int]) -> None:
        try:
            edge = client(url)
            for seq in seqs:
                edge.send_heartbeat(**keyed(seq, now))
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    with ServeProcess(
        tmp_path / "serve", "--workers", "2", "--store-connections", "4", "--compact-every", "0.2",
        "--keep-raw", "1", "--keep-hourly", "30", store=store_target,
    ) as serve:
        # 8 threads, each sending every one of 20 keys: 160 requests, 20 heartbeats
        threads = [
            threading.Thread(target=send, args=(serve.url, list(range(1, 21))))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, failures[:3]
        client(serve.url).send_heartbeat(**keyed(100, now - 5 * 86400))  # past --keep-raw

        def rolled_up() -> bool:
            with open_read_only(store_target) as store:
                return bool(store.metric_rollups("cam-1", None, "spool-bytes"))

        wait_until(rolled_up, timeout=60)
        assert serve.stop() == 0
        log = serve.log()
    assert "Traceback" not in log and "compaction pass failed" not in log, log[-3000:]
    with open_read_only(store_target) as store:
        assert store.heartbeat_count("cam-1") == 21  # rolled-up heartbeats count too
        assert [h.points for h in store.metric_rollups("cam-1", None, "spool-bytes")] == [1]


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.add(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_a_worker_killed_is_replaced_and_no_request_fails(tmp_path: Path) -> None:
    """gunicorn's master restarts a worker that dies (``kill -9``); requests before, during and
    after all get 200 (a device retries one whose connection the dead worker held, as boto3
    does), and SIGTERM then ends master and workers with status 0."""
    with ServeProcess(tmp_path, "--workers", "2") as serve:
        assert serve.proc is not None
        deadline = time.monotonic() + 20
        while len(workers := _children(serve.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # "listening" comes once the socket is bound, before the forks
        assert len(workers) == 2, workers
        # a device's client: its kept-alive connection may be the dead worker's, so it retries
        edge = boto3.client(
            "sagemaker-edge", endpoint_url=serve.url, region_name="us-east-1",
            aws_access_key_id=AKID, aws_secret_access_key=SECRET,
            config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
        )
        for _ in range(5):
            edge.send_heartbeat(**heartbeat())
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _children(serve.proc.pid)
            if len(now) == 2 and victim not in now:
                break
            edge.send_heartbeat(**heartbeat())  # the other worker answers meanwhile
            time.sleep(0.2)
        else:
            raise AssertionError(f"no new worker: {_children(serve.proc.pid)}\n{serve.log()}")
        for _ in range(20):  # fresh connections reach both workers, the new one included
            client(serve.url).send_heartbeat(**heartbeat())
        assert serve.stop() == 0, serve.log()[-3000:]
    assert "Traceback" not in serve.log(), serve.log()[-3000:]
