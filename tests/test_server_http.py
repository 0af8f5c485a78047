"""HTTP-level behaviour: routing, framing, JSON, size limits, and fuzzed requests that must always
get an AWS-style 4xx (never a 5xx, never a dropped connection)."""

from __future__ import annotations

import json
import socket
from typing import Any

from conftest_server import (
    DEVICE,
    FLEET,
    Answer,
    assert_aws_error,
    make_server,
    parse_answer,
    post,
    raw_request,
    shared_server_fixture,  # noqa: F401 - the fixture
    signed_headers,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgetelemetry.server import EndpointServer

REG_BODY = json.dumps({"DeviceName": DEVICE, "DeviceFleetName": FLEET}).encode()


def signed_post(server: EndpointServer, op: str, body: bytes) -> Answer:
    return post(server.port, op, body, signed_headers(server.port, op, body))


def assert_client_error(answer: Answer) -> None:
    assert 400 <= answer.status < 500, (answer.status, answer.body)
    assert answer.error_type, answer.headers
    assert "date" in answer.headers
    assert isinstance(answer.json()["message"], str)


def test_unknown_operation_and_method(shared_server: EndpointServer) -> None:
    for op in ("DescribeDevice", "sendheartbeat", "SendHeartbeat/extra", ""):
        answer = signed_post(shared_server, op, REG_BODY)
        assert_aws_error(answer, 404, "UnknownOperationException")
    for method in ("GET", "PUT", "DELETE", "BREW", "HEAD"):
        answer = post(shared_server.port, "SendHeartbeat", b"", {"Host": "h"}, method=method)
        assert answer.status == 404
        assert answer.error_type == "UnknownOperationException"


def test_malformed_json(shared_server: EndpointServer) -> None:
    for body in (
        b"{",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe",
        b'{"Value": NaN}',
        b'{"a": 1e999}',
        b"[" * 100_000,
        b'{"DeviceName": "\\ud800"}',
    ):
        answer = signed_post(shared_server, "GetDeviceRegistration", body)
        assert_aws_error(answer, 400, "SerializationException")


def test_empty_body_is_missing_required_members(shared_server: EndpointServer) -> None:
    answer = signed_post(shared_server, "GetDeviceRegistration", b"")
    message = assert_aws_error(answer, 400, "ValidationException")
    assert "DeviceName" in message


def test_body_size_limit() -> None:
    with make_server(max_body=1024) as srv:
        body = json.dumps({"DeviceName": DEVICE, "DeviceFleetName": FLEET, "x": "a" * 2000})
        answer = signed_post(srv, "GetDeviceRegistration", body.encode())
        assert_aws_error(answer, 413, "RequestEntityTooLargeException")
        assert answer.headers.get("connection") == "close"
        # declared length over the limit: refused before reading anything
        answer = post(srv.port, "SendHeartbeat", b"", {"Host": "h", "Content-Length": "999999999"})
        assert_aws_error(answer, 413, "RequestEntityTooLargeException")


def test_framing_errors(shared_server: EndpointServer) -> None:
    port = shared_server.port
    answer = raw_request(port, b"POST /SendHeartbeat HTTP/1.1\r\nHost: h\r\n\r\n")
    assert_aws_error(answer, 411, "LengthRequiredException")
    answer = raw_request(
        port,
        b"POST /SendHeartbeat HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n",
    )
    assert_aws_error(answer, 411, "LengthRequiredException")
    for length in ("-1", "abc", "\u00b2", "9" * 5000, "1, 2"):
        data = f"POST /SendHeartbeat HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\r\n{{}}"
        answer = raw_request(port, data.encode("latin-1"))
        assert_aws_error(answer, 400, "SerializationException")
    # body shorter than declared, then the client stops sending
    answer = raw_request(
        port, b"POST /SendHeartbeat HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\n\r\n{}"
    )
    assert_aws_error(answer, 400, "SerializationException")


def test_malformed_http_gets_an_aws_style_answer(shared_server: EndpointServer) -> None:
    port = shared_server.port
    for data in (
        b"NONSENSE\r\n\r\n",
        b"POST /SendHeartbeat HTTP/9.9\r\n\r\n",
        b"POST /SendHeartbeat HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
        b"POST /SendHeartbeat HTTP/1.1\r\n" + b"X-H: v\r\n" * 200 + b"\r\n",
        b"POST /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"POST /SendHeartbeat HTTP/1.1\r\nExpect: teapot\r\nContent-Length: 0\r\n\r\n",
    ):
        answer = raw_request(port, data)
        assert_client_error(answer)


def test_header_fields_are_read_as_rfc_9112_says(shared_server: EndpointServer) -> None:
    """The embedded server reads header fields itself (not with the email package): a folded
    line or one without a colon is a 400, 100 fields pass and the 101st is a 431, a value keeps
    what follows its leading whitespace, and Expect: 100-continue gets its interim answer."""
    port = shared_server.port
    for bad in (b"X-A: 1\r\n folded\r\n", b"no colon here\r\n", b"Bad Name: 1\r\n",
                b": empty name\r\n"):
        answer = raw_request(port, b"POST /SendHeartbeat HTTP/1.1\r\n" + bad + b"\r\n")
        assert_client_error(answer)
        assert answer.status == 400, (bad, answer.status)
    headers = signed_headers(port, "GetDeviceRegistration", REG_BODY)
    signed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    def request(extra: str) -> bytes:
        return (f"POST /GetDeviceRegistration HTTP/1.1\r\n{signed}{extra}Content-Length: "
                f"{len(REG_BODY)}\r\n\r\n").encode() + REG_BODY

    fields = len(headers) + 1  # with Content-Length
    filler = "".join(f"X-Filler-{i}:\t v{i} \r\n" for i in range(100 - fields))
    assert raw_request(port, request(filler)).status == 200
    assert raw_request(port, request(filler + "X-One-Too-Many: 1\r\n")).status == 431
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request("Expect: 100-continue\r\n"))
        data = b""
        while not data.endswith(b"}"):
            data += sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), data[:80]
    assert parse_answer(data).status == 200


def test_keep_alive_serves_several_requests_on_one_connection(
    shared_server: EndpointServer,
) -> None:
    port = shared_server.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(3):
            headers = signed_headers(port, "GetDeviceRegistration", REG_BODY)
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            sock.sendall(
                f"POST /GetDeviceRegistration HTTP/1.1\r\n{head}Content-Length: {len(REG_BODY)}"
                f"\r\n\r\n".encode()
                + REG_BODY
            )
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                data += sock.recv(65536)
            assert parse_answer(data).status == 200


def test_connection_cap_answers_service_unavailable() -> None:
    # nothing can be dropped (the holder is younger than evict_after): the newcomer gets 503
    with make_server(max_connections=1, evict_after=30.0) as srv:
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            idle.sendall(b"POST /SendHeartbeat HTTP/1.1\r\n")  # holds the only slot
            import time

            time.sleep(0.1)
            answer = raw_request(srv.port, b"POST /SendHeartbeat HTTP/1.1\r\n\r\n")
            assert answer.status == 503
            assert answer.error_type == "ServiceUnavailable"
        finally:
            idle.close()


# -- fuzzing ----------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=20,
)
names = st.sampled_from([DEVICE, FLEET, "cam-2", "x", "", "a" * 64, "bad name", "cam_1"])
models = st.fixed_dictionaries(
    {},
    optional={
        "ModelName": st.sampled_from(["resnet18", "res_net", "abc", "m" * 300])
        | st.text(max_size=8),
        "ModelVersion": st.sampled_from(["1.0", "1-0", ""]) | json_scalars,
        "LatestInference": st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False),
        "ModelMetrics": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "MetricName": st.sampled_from(["latency-ms-p99", "latency_ms", "p99"]),
                    "Value": json_scalars,
                    "Timestamp": st.integers(-(2**70), 2**70) | json_scalars,
                    "Dimension": st.sampled_from(["a/b", "-a", ""]) | st.text(max_size=5),
                },
            ),
            max_size=3,
        )
        | json_values,
    },
)
heartbeat_like = st.fixed_dictionaries(
    {},
    optional={
        "AgentVersion": st.sampled_from(["1.0", "1-0", ""]) | json_scalars,
        "DeviceName": names | json_scalars,
        "DeviceFleetName": names | json_scalars,
        "Models": st.lists(models, max_size=3) | json_values,
        "AgentMetrics": json_values,
        "DeploymentResult": st.fixed_dictionaries(
            {},
            optional={
                "DeploymentStatusMessage": st.text(max_size=20),
                "DeploymentModels": json_values,
            },
        )
        | json_values,
        "Unknown": json_values,
    },
)
bodies = (
    st.binary(max_size=512)
    | json_values.map(lambda v: json.dumps(v).encode())
    | heartbeat_like.map(lambda v: json.dumps(v).encode())
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    op=st.sampled_from(["SendHeartbeat", "GetDeviceRegistration", "GetDeployments"]), body=bodies
)
def test_fuzzed_signed_bodies_never_fault(
    shared_server: EndpointServer, op: str, body: bytes
) -> None:
    answer = signed_post(shared_server, op, body)
    event(f"{answer.status} {answer.error_type}")
    if answer.status != 200:
        assert_client_error(answer)
        assert answer.error_type in {"SerializationException", "ValidationException"}, answer.body


header_names = st.sampled_from(
    [
        "Authorization",
        "X-Amz-Date",
        "Date",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "X-Amz-Security-Token",
        "X-Amz-Content-SHA256",
        "Content-Type",
        "Expect",
        "Connection",
    ]
) | st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
    min_size=1,
    max_size=20,
)
header_values = st.text(
    st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"), max_size=120
) | st.sampled_from(
    [
        "AWS4-HMAC-SHA256 Credential=AKIDEDGETEST0001/20240101/us-east-1/sagemaker/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=////, SignedHeaders=;;;, Signature=",
        "20240101T000000Z",
        "99991231T235959Z",
        "Fri, 31 Dec 9999 23:59:59 -2359",
        "chunked",
        "100-continue",
        "-1",
        "0",
        "99999999999999999999",
        "close",
    ]
)


@FUZZ
@given(
    op=st.sampled_from(["SendHeartbeat", "GetDeviceRegistration", "Nope"]),
    sign=st.booleans(),
    drop=st.sets(st.sampled_from(["Authorization", "X-Amz-Date", "Host", "Content-Type"])),
    extra=st.lists(st.tuples(header_names, header_values), max_size=6),
    method=st.sampled_from(["POST", "POST", "GET", "OPTIONS"]),
)
def test_fuzzed_headers_never_fault(
    shared_server: EndpointServer,
    op: str,
    sign: bool,
    drop: set[str],
    extra: list[tuple[str, str]],
    method: str,
) -> None:
    port = shared_server.port
    headers: dict[str, Any] = signed_headers(port, op, REG_BODY) if sign else {"Host": "h"}
    lines = [f"{method} /{op} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k not in drop]
    lines += [f"{k}: {v}" for k, v in extra]
    if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in extra):
        lines.append(f"Content-Length: {len(REG_BODY)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + REG_BODY
    answer = raw_request(port, data)
    event(f"{answer.status} {answer.error_type}")
    if answer.status != 200:
        assert_client_error(answer)


_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _name(min_size: int, max_size: int, extra: str = "") -> st.SearchStrategy[str]:
    """Alphanumeric words joined by hyphens (the model's ``(-*[a-zA-Z0-9])*`` names)."""
    word = st.text(_ALNUM + extra, min_size=1, max_size=8)
    return st.builds(
        lambda first, rest: "-".join([first, *rest])[:max_size],
        st.text(_ALNUM, min_size=min_size, max_size=min_size + 4),
        st.lists(word, max_size=3),
    ).filter(lambda n: not n.endswith("-") and not n.endswith("/"))


_VERSIONS = st.text(_ALNUM + " _.", min_size=1, max_size=64)


timestamps = st.integers(1_600_000_000, 2_000_000_000) | st.floats(1.6e9, 2e9)
metric = st.fixed_dictionaries(
    {
        "MetricName": _name(4, 30),
        "Value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**80), 2**80),
    },
    optional={
        "Timestamp": timestamps,
        "Dimension": _name(1, 40, extra="/"),
    },
)
valid_heartbeats = st.fixed_dictionaries(
    {
        "AgentVersion": _VERSIONS,
        "DeviceName": st.just(DEVICE),
        "DeviceFleetName": st.just(FLEET),
    },
    optional={
        "AgentMetrics": st.lists(metric, max_size=3),
        "Models": st.lists(
            st.fixed_dictionaries(
                {"ModelName": _name(4, 40)},
                optional={
                    "ModelVersion": _VERSIONS,
                    "LatestInference": timestamps,
                    "LatestSampleTime": timestamps,
                    "ModelMetrics": st.lists(metric, max_size=3),
                },
            ),
            max_size=3,
        ),
        "DeploymentResult": st.fixed_dictionaries(
            {},
            optional={
                "DeploymentName": _name(1, 20),
                "DeploymentStatusMessage": st.text(),
                "DeploymentStartTime": timestamps,
            },
        ),
    },
)


@FUZZ
@given(params=valid_heartbeats)
def test_any_valid_heartbeat_is_stored(
    shared_server: EndpointServer, params: dict[str, Any]
) -> None:
    before = shared_server.store.heartbeat_count(DEVICE)
    answer = signed_post(shared_server, "SendHeartbeat", json.dumps(params).encode())
    assert answer.status == 200, answer.body
    assert shared_server.store.heartbeat_count(DEVICE) == before + 1


def test_stop_does_not_wait_for_idle_keep_alive_connections() -> None:
    import time

    srv = make_server(request_timeout=30)
    srv.start()
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        time.sleep(0.05)
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 2.0
        assert idle.recv(1) == b""  # the server ended the idle connection
    finally:
        idle.close()


def test_a_newcomer_drops_the_slowest_connection_instead_of_a_503() -> None:
    """Issue 12: when the slots run out, the connection longest stuck in its headers goes."""
    with make_server(max_connections=2, max_per_address=2, evict_after=0.05) as srv:
        slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
        try:
            for sock in slow:
                sock.sendall(b"POST /SendHeartbeat HTTP/1.1\r\nX-a: ")  # and then nothing
            import time

            time.sleep(0.3)
            answer = signed_post(srv, "GetDeviceRegistration", REG_BODY)
            assert answer.status == 200, (answer.status, answer.body)
            closed = 0
            for sock in slow:
                sock.settimeout(2)
                try:
                    closed += sock.recv(100) == b""
                except ConnectionResetError:
                    closed += 1
                except TimeoutError:
                    pass
            assert closed == 1  # the stalest one, and only it
        finally:
            for sock in slow:
                sock.close()
