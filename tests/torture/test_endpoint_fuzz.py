"""A bounded fuzz of the endpoint's request path, through a real ``serve`` process in both modes:
random methods, targets, headers, bodies and signatures (valid requests mutated, and raw bytes)
never take a worker down and never get a 5xx - the one 5xx allowed is a deliberate 503
(overload)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest_server import DEVICE, FLEET, heartbeat, signed_headers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realservices import descendants
from serve_procs import ServeProcess

from .conftest import torture_size

EXAMPLES = torture_size(ci=250, full=20_000)
OPERATIONS = ["SendHeartbeat", "GetDeviceRegistration", "GetDeployments"]
TARGETS = [f"/{op}" for op in OPERATIONS] + [
    "/healthz", "/readyz", "/fleet", "/fleet/api/status", "/", "/SendHeartbeat?x=1", "/%zz",
    "/fleet/../etc/passwd",
]
HEADER_NAMES = ["Content-Length", "Transfer-Encoding", "Authorization", "X-Amz-Date", "Host",
                "X-Amz-Security-Token", "x-amz-content-sha256", "Expect", "Connection",
                "Content-Type", "X-Forwarded-For", "Date"]


# one fixed heartbeat: the strategy must draw the same way on every run (hypothesis replays)
NOW = float(int(time.time()))
HEARTBEAT = heartbeat()
HEARTBEAT["Models"][0].update(LatestInference=NOW)
HEARTBEAT["Models"][0]["ModelMetrics"][0]["Timestamp"] = NOW


def exchange(port: int, data: bytes) -> int | None:
    """Send, half-close, read the first answer's status; None when there is no answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        raw = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in raw:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                raw += chunk
    line = raw.split(b"\r\n", 1)[0].split(b" ")
    if len(line) < 2 or not line[1].isdigit():
        return None
    return int(line[1])


def valid_request(port: int, op: str, body: bytes) -> tuple[str, dict[str, str]]:
    return f"/{op}", signed_headers(port, op, body)


@st.composite
def requests(draw: Any, port: int) -> bytes:
    kind = draw(st.sampled_from(["mutated", "random", "raw"]))
    if kind == "raw":
        return bytes(draw(st.binary(max_size=2000)))
    op = draw(st.sampled_from(OPERATIONS))
    params: Any = HEARTBEAT if op == "SendHeartbeat" else {
        "DeviceName": DEVICE, "DeviceFleetName": FLEET}
    body = json.dumps(params).encode()
    if draw(st.booleans()):
        body = draw(st.one_of(
            st.binary(max_size=3000),
            st.just(body[: draw(st.integers(0, len(body)))]),
            st.just(body.replace(b"1.0", draw(st.sampled_from([b"NaN", b"1e999", b'"x"', b"[]"])))),
        ))
    target, headers = valid_request(port, op, body)
    method = "POST"
    if kind == "random":
        method = draw(st.sampled_from(["POST", "GET", "HEAD", "PUT", "OPTIONS", "BREW", "P\x00ST"]))
        target = draw(st.sampled_from(TARGETS))
        for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=4)):
            headers[name] = draw(st.text(
                st.characters(min_codepoint=32, max_codepoint=255), max_size=120))
        if draw(st.booleans()) and headers.get("Authorization"):  # a flipped signature byte
            auth = headers["Authorization"]
            k = draw(st.integers(0, len(auth) - 1))
            headers["Authorization"] = auth[:k] + ("0" if auth[k] != "0" else "1") + auth[k + 1:]
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if not any(name.lower() == "content-length" for name in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


@pytest.mark.parametrize("mode", ["embedded", "workers"])
def test_fuzzed_requests_never_crash_or_fault(
    tmp_path: Path, mode: str, torture_report: Callable[..., None]
) -> None:
    args = ("--workers", "2") if mode == "workers" else ()
    statuses: Counter[int | None] = Counter()
    with ServeProcess(tmp_path, *args, "--log-level", "WARNING") as serve:
        assert serve.proc is not None
        workers_before = descendants(serve.proc.pid)

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            status = exchange(serve.port, data.draw(requests(serve.port)))
            statuses[status] += 1
            assert status is None or status < 500 or status == 503, status

        run()
        workers_after = descendants(serve.proc.pid)
        alive = serve.proc.poll() is None
        log = serve.log()
    crashed = (0 if alive else 1) + len(workers_before - workers_after)
    faults = sum(n for s, n in statuses.items() if s is not None and s >= 500 and s != 503)
    torture_report(
        mode=mode, tries=sum(statuses.values()), crashed=crashed, fivexx=faults,
        no_answer=statuses[None],
        statuses=",".join(f"{s}:{n}" for s, n in sorted(statuses.items(), key=str)),
    )
    assert crashed == 0, log[-3000:]
    assert faults == 0
    assert "Traceback" not in log, log[-3000:]
