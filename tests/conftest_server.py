"""Helpers and fixtures for the endpoint tests: a real server on 127.0.0.1, real boto3, and
requests signed by botocore's SigV4 signer at a chosen time and sent over plain sockets.

Not a conftest.py (the tests/ conftest belongs to the whole project): test modules import the
fixtures they use from here (``server_fixture`` provides ``server``, ``shared_server_fixture``
provides ``shared_server``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from edgetelemetry.server import EndpointServer

AKID = "AKIDEDGETEST0001"
SECRET = "edge-test-secret/0001+abc"
TOKEN_AKID = "ASIAEDGETEST0002"
TOKEN_SECRET = "edge-test-secret-0002"
TOKEN = "session-token-0002"
SCOPED_AKID = "AKIDEDGESCOPED03"
SCOPED_SECRET = "edge-test-secret-0003"
REGION = "us-east-1"
FLEET = "fleet-a"
DEVICE = "cam-1"

CREDENTIALS: dict[str, Any] = {
    AKID: SECRET,
    TOKEN_AKID: {"secret_access_key": TOKEN_SECRET, "session_token": TOKEN},
    SCOPED_AKID: {"secret_access_key": SCOPED_SECRET, "fleets": ["fleet-b"]},
}


def make_server(**kwargs: Any) -> EndpointServer:
    kwargs.setdefault("credentials", CREDENTIALS)
    server = EndpointServer(kwargs.pop("store_path", None), **kwargs)
    server.store.register_fleet(FLEET)
    server.store.register_devices(FLEET, [DEVICE, "cam-2"])
    server.store.register_fleet("fleet-b")
    server.store.register_devices("fleet-b", ["cam-b1"])
    return server


@pytest.fixture(name="server", params=["sqlite", "postgresql"])
def server_fixture(request: pytest.FixtureRequest) -> Iterator[EndpointServer]:
    """A started server on each store backend: SQLite in memory, and a fresh database of the
    test PostgreSQL server (tests/realservices.py)."""
    target = None
    if request.param == "postgresql":
        target = request.getfixturevalue("postgresql_url")
    srv = make_server(store_path=target)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(name="shared_server", scope="module")
def shared_server_fixture() -> Iterator[EndpointServer]:
    """One server for a module's read-mostly tests (hypothesis needs a non-function scope)."""
    srv = make_server()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def client(
    url: str,
    key: str = AKID,
    secret: str = SECRET,
    token: str | None = None,
    region: str = REGION,
) -> Any:
    return boto3.client(
        "sagemaker-edge",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )


def heartbeat(device: str = DEVICE, fleet: str = FLEET, **extra: Any) -> dict[str, Any]:
    now = time.time()
    params: dict[str, Any] = {
        "AgentVersion": "1.0",
        "DeviceName": device,
        "DeviceFleetName": fleet,
        "Models": [
            {
                "ModelName": "resnet18",
                "ModelVersion": "1.0",
                "LatestInference": now,
                "ModelMetrics": [
                    {
                        "MetricName": "latency-ms-p99",
                        "Value": 12.5,
                        "Timestamp": now,
                        "Dimension": "camera-front",
                    }
                ],
            }
        ],
    }
    params.update(extra)
    return params


class FixedTimeSigV4(SigV4Auth):
    """botocore's SigV4 signer with the signing time given instead of read from the clock."""

    def __init__(self, credentials: Credentials, service: str, region: str, when: datetime):
        super().__init__(credentials, service, region)
        self._when = when

    def add_auth(self, request: AWSRequest) -> None:
        request.context["timestamp"] = self._when.strftime(SIGV4_TIMESTAMP)
        self._modify_request_before_signing(request)
        canonical = self.canonical_request(request)
        signature = self.signature(self.string_to_sign(request, canonical), request)
        self._inject_signature_to_request(request, signature)


def signed_headers(
    port: int,
    operation: str,
    body: bytes,
    *,
    key: str = AKID,
    secret: str = SECRET,
    token: str | None = None,
    region: str = REGION,
    service: str = "sagemaker",
    when: datetime | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers (Host, X-Amz-Date, Authorization...) of a request signed as botocore would."""
    url = f"http://127.0.0.1:{port}/{operation}"
    request = AWSRequest(method="POST", url=url, data=body)
    request.headers["Host"] = f"127.0.0.1:{port}"
    request.headers["Content-Type"] = "application/json"
    for name, value in (extra or {}).items():
        request.headers[name] = value
    signer = FixedTimeSigV4(
        Credentials(key, secret, token), service, region, when or datetime.now(timezone.utc)
    )
    signer.add_auth(request)
    return dict(request.headers.items())


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def error_type(self) -> str | None:
        return self.headers.get("x-amzn-errortype")


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> Answer:
    """Send raw bytes, half-close, and parse the first final HTTP answer (skipping 1xx)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return parse_answer(b"".join(chunks))


def parse_answer(raw: bytes) -> Answer:
    while True:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"no complete HTTP answer in {raw[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            raw = rest
            continue
        length = int(headers.get("content-length", "0"))
        return Answer(status, headers, rest[:length])


def post(
    port: int,
    operation: str,
    body: bytes,
    headers: Mapping[str, str],
    method: str = "POST",
) -> Answer:
    """A request with exactly these headers (plus a correct Content-Length unless given)."""
    lines = [f"{method} /{operation} HTTP/1.1"]
    names = {k.lower() for k in headers}
    for name, value in headers.items():
        lines.append(f"{name}: {value}")
    if "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def assert_aws_error(answer: Answer, status: int, code: str) -> str:
    """The answer is an AWS-style error with this status and code; return its message."""
    assert answer.status == status, (answer.status, answer.headers, answer.body)
    assert answer.error_type == code, (answer.headers, answer.body)
    assert "date" in answer.headers
    assert answer.headers.get("x-amzn-requestid")
    message = answer.json()["message"]
    assert isinstance(message, str) and message
    return message
