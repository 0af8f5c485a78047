"""SigV4 verification: hand-crafted requests signed by botocore's signer, sent over a socket."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from conftest_server import (
    AKID,
    DEVICE,
    FLEET,
    SECRET,
    TOKEN,
    TOKEN_AKID,
    TOKEN_SECRET,
    Answer,
    assert_aws_error,
    heartbeat,
    post,
    shared_server_fixture,  # noqa: F401 - the fixture
    signed_headers,
)

from edgetelemetry.server import EndpointServer

BODY = json.dumps({"AgentVersion": "1.0", "DeviceName": DEVICE, "DeviceFleetName": FLEET}).encode()
REG_BODY = json.dumps({"DeviceName": DEVICE, "DeviceFleetName": FLEET}).encode()


def send(
    server: EndpointServer, body: bytes = BODY, op: str = "SendHeartbeat", **kw: object
) -> Answer:
    headers = signed_headers(server.port, op, body, **kw)  # type: ignore[arg-type]
    return post(server.port, op, body, headers)


def test_crafted_signed_request_succeeds(shared_server: EndpointServer) -> None:
    answer = send(shared_server)
    assert answer.status == 200, answer.body
    answer = send(shared_server, REG_BODY, "GetDeviceRegistration")
    assert answer.status == 200
    assert answer.json()["DeviceRegistration"] == "REGISTERED"


def test_full_heartbeat_with_session_token(shared_server: EndpointServer) -> None:
    body = json.dumps(heartbeat()).encode()
    answer = send(shared_server, body, key=TOKEN_AKID, secret=TOKEN_SECRET, token=TOKEN)
    assert answer.status == 200, answer.body


def test_unsigned_request_is_missing_authentication_token(shared_server: EndpointServer) -> None:
    answer = post(shared_server.port, "SendHeartbeat", BODY, {"Host": "127.0.0.1"})
    message = assert_aws_error(answer, 403, "MissingAuthenticationTokenException")
    assert message == "Missing Authentication Token"


def test_wrong_access_key(shared_server: EndpointServer) -> None:
    answer = send(shared_server, key="AKIDNOTCONFIGURED")
    assert_aws_error(answer, 403, "UnrecognizedClientException")


def test_wrong_secret(shared_server: EndpointServer) -> None:
    answer = send(shared_server, secret=SECRET + "x")
    message = assert_aws_error(answer, 403, "InvalidSignatureException")
    assert "does not match" in message


@pytest.mark.parametrize("minutes", [16, 60 * 24])
def test_client_clock_behind_is_signature_expired(
    shared_server: EndpointServer, minutes: int
) -> None:
    when = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    message = assert_aws_error(send(shared_server, when=when), 403, "InvalidSignatureException")
    assert "Signature expired" in message


def test_client_clock_ahead_is_not_yet_current(shared_server: EndpointServer) -> None:
    when = datetime.now(timezone.utc) + timedelta(minutes=16)
    message = assert_aws_error(send(shared_server, when=when), 403, "InvalidSignatureException")
    assert "not yet current" in message


def test_skew_within_fifteen_minutes_is_accepted(shared_server: EndpointServer) -> None:
    for minutes in (-14, 14):
        when = datetime.now(timezone.utc) + timedelta(minutes=minutes)
        assert send(shared_server, when=when).status == 200


def test_tampered_body(shared_server: EndpointServer) -> None:
    headers = signed_headers(shared_server.port, "SendHeartbeat", BODY)
    tampered = BODY.replace(b"1.0", b"6.6")
    answer = post(shared_server.port, "SendHeartbeat", tampered, headers)
    assert_aws_error(answer, 403, "InvalidSignatureException")


def test_tampered_signed_header(shared_server: EndpointServer) -> None:
    headers = signed_headers(shared_server.port, "SendHeartbeat", BODY)
    headers["Content-Type"] = "application/x-amz-json-1.1"  # content-type is signed by botocore
    assert_aws_error(
        post(shared_server.port, "SendHeartbeat", BODY, headers), 403, "InvalidSignatureException"
    )
    headers = signed_headers(shared_server.port, "SendHeartbeat", BODY)
    headers["Host"] = "evil.example:443"
    assert_aws_error(
        post(shared_server.port, "SendHeartbeat", BODY, headers), 403, "InvalidSignatureException"
    )


def test_unsigned_extra_header_is_harmless(shared_server: EndpointServer) -> None:
    headers = signed_headers(shared_server.port, "SendHeartbeat", BODY)
    headers["X-Extra"] = "not signed"
    assert post(shared_server.port, "SendHeartbeat", BODY, headers).status == 200


def test_tampered_path(shared_server: EndpointServer) -> None:
    headers = signed_headers(shared_server.port, "GetDeployments", REG_BODY)
    answer = post(shared_server.port, "GetDeviceRegistration", REG_BODY, headers)
    assert_aws_error(answer, 403, "InvalidSignatureException")


def test_tampered_signature_and_signed_headers(shared_server: EndpointServer) -> None:
    headers = signed_headers(shared_server.port, "SendHeartbeat", BODY)
    auth = headers["Authorization"]
    flipped = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    for bad in (
        flipped,
        auth.replace("Signature=", "Signature=00"),
        auth.replace("SignedHeaders=", "SignedHeaders=x-extra;"),
        auth.replace("content-type;", ""),
    ):
        answer = post(shared_server.port, "SendHeartbeat", BODY, {**headers, "Authorization": bad})
        assert_aws_error(answer, 403, "InvalidSignatureException")


def test_content_sha256_header_must_match_body(shared_server: EndpointServer) -> None:
    import hashlib

    good = hashlib.sha256(BODY).hexdigest()
    headers = signed_headers(
        shared_server.port, "SendHeartbeat", BODY, extra={"X-Amz-Content-SHA256": good}
    )
    assert post(shared_server.port, "SendHeartbeat", BODY, headers).status == 200
    # the signed hash of the original body does not cover another body
    tampered = BODY.replace(b"1.0", b"6.6")
    answer = post(shared_server.port, "SendHeartbeat", tampered, headers)
    assert_aws_error(answer, 403, "InvalidSignatureException")
    headers = signed_headers(
        shared_server.port,
        "SendHeartbeat",
        BODY,
        extra={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    assert_aws_error(
        post(shared_server.port, "SendHeartbeat", BODY, headers), 403, "InvalidSignatureException"
    )


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"region": "eu-west-1"}, "region"),
        ({"service": "s3"}, "service"),
    ],
)
def test_wrong_credential_scope(
    shared_server: EndpointServer, kw: dict[str, str], needle: str
) -> None:
    message = assert_aws_error(send(shared_server, **kw), 403, "InvalidSignatureException")
    assert needle in message


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer abc",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sagemaker/aws4_request",
        "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=A/B/C/D/E, SignedHeaders=x-amz-date, Signature=00",
    ],
)
def test_malformed_authorization_is_incomplete_signature(
    shared_server: EndpointServer, authorization: str
) -> None:
    headers = signed_headers(shared_server.port, "SendHeartbeat", BODY)
    headers["Authorization"] = authorization
    answer = post(shared_server.port, "SendHeartbeat", BODY, headers)
    assert_aws_error(answer, 400, "IncompleteSignatureException")


def test_missing_or_bad_date(shared_server: EndpointServer) -> None:
    headers = signed_headers(shared_server.port, "SendHeartbeat", BODY)
    del headers["X-Amz-Date"]
    assert_aws_error(
        post(shared_server.port, "SendHeartbeat", BODY, headers),
        400,
        "IncompleteSignatureException",
    )
    headers["X-Amz-Date"] = "yesterday"
    assert_aws_error(
        post(shared_server.port, "SendHeartbeat", BODY, headers),
        400,
        "IncompleteSignatureException",
    )


def test_token_must_match_the_key(shared_server: EndpointServer) -> None:
    for token in (None, TOKEN + "x"):
        answer = send(shared_server, key=TOKEN_AKID, secret=TOKEN_SECRET, token=token)
        assert_aws_error(answer, 403, "UnrecognizedClientException")
    answer = send(shared_server, key=AKID, secret=SECRET, token=TOKEN)
    assert_aws_error(answer, 403, "UnrecognizedClientException")


def test_secrets_never_appear_in_answers_or_logs(
    shared_server: EndpointServer, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    answers = [
        send(shared_server, secret="wrong"),
        send(shared_server, key=TOKEN_AKID, secret=TOKEN_SECRET, token="bad"),
        send(shared_server),
    ]
    text = caplog.text + "".join(a.body.decode() + str(a.headers) for a in answers)
    for secret in (SECRET, TOKEN_SECRET, TOKEN):
        assert secret not in text


def test_headers_botocore_never_signs_are_verified_when_another_sdk_signs_them(
    shared_server: EndpointServer,
) -> None:
    """aws-sdk-cpp and friends may sign User-Agent; botocore's signer drops it from the canonical
    request.  Emulate such an SDK and check the server canonicalises what the client listed."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.compat import HTTPHeaders
    from botocore.credentials import Credentials

    class SignsEverything(SigV4Auth):
        def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
            headers = HTTPHeaders()
            for name, value in request.headers.items():
                headers[name.lower()] = value
            return headers

    port = shared_server.port
    request = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/SendHeartbeat", data=BODY)
    request.headers["Host"] = f"127.0.0.1:{port}"
    request.headers["User-Agent"] = "aws-sdk-cpp/1.8 legacy-agent"
    SignsEverything(Credentials(AKID, SECRET), "sagemaker", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    assert "user-agent" in headers["Authorization"]
    assert post(port, "SendHeartbeat", BODY, headers).status == 200
    headers["User-Agent"] = "tampered"
    assert_aws_error(post(port, "SendHeartbeat", BODY, headers), 403, "InvalidSignatureException")
