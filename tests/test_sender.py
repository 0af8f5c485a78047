"""Sender: real boto3 over real HTTP to a scripted server; what the client sent is asserted."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from scripted_server import Action, ScriptedServer, amz_date_epoch

from edgetelemetry.agent.config import AgentConfig
from edgetelemetry.agent.credentials import CredentialsError
from edgetelemetry.agent.sender import Outcome, Sender, SendResult, full_jitter, server_date

AKID = "AKIDSENDERTEST01"
SECRET = "sender/secret+0001xyz"
TOKEN = "sender-session-token-0001"
PARAMS = {"AgentVersion": "1.0", "DeviceName": "cam-1", "DeviceFleetName": "fleet-a"}
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()


class Sleeps(list[float]):
    """An injected ``sleep`` that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class UpperRng(random.Random):
    """``uniform(a, b)`` returns ``b``: every backoff is its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class ZeroRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


class CountingProvider:
    """A credential provider: each ``load()`` hands out the next key pair."""

    def __init__(self) -> None:
        self.loads = 0

    def load(self) -> Credentials:
        self.loads += 1
        return Credentials(f"{AKID}{self.loads}", f"{SECRET}{self.loads}", TOKEN)


@pytest.fixture(name="srv")
def srv_fixture() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


def make(srv: ScriptedServer, **kw: Any) -> Sender:
    kw.setdefault("credentials", Credentials(AKID, SECRET, TOKEN))
    kw.setdefault("sleep", Sleeps())
    kw.setdefault("connect_timeout", 0.5)
    kw.setdefault("read_timeout", 0.3)
    return Sender(srv.url, "us-east-1", **kw)


# -- success and what went over the wire ------------------------------------------------------

def test_ok_sends_a_signed_send_heartbeat(srv: ScriptedServer) -> None:
    sender = make(srv)
    result = sender.send(PARAMS)
    assert result == SendResult(Outcome.OK, 1, http_status=200,
                                server_time=result.server_time)
    assert result.ok and result.server_time is not None
    (req,) = srv.requests
    assert (req.method, req.path, req.json) == ("POST", "/SendHeartbeat", PARAMS)
    assert req.access_key_id == AKID
    assert req.headers["x-amz-security-token"] == TOKEN
    assert req.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert "/us-east-1/sagemaker/aws4_request" in req.headers["authorization"]
    assert abs(amz_date_epoch(req.amz_date or "") - time.time()) < 5
    assert sender.stats()["successes"] == 1


def test_signatures_are_accepted_by_the_project_endpoint() -> None:
    """Our signer (UNSIGNED client + before-sign) produces SigV4 a real verifier accepts,
    also after a clock correction moved the signing time an hour ahead."""
    server_mod = pytest.importorskip("edgetelemetry.server")
    skewed = server_mod.EndpointServer(None, credentials={AKID: SECRET},
                                       clock=lambda: time.time() + 3600)
    skewed.store.register_fleet("fleet-a")
    skewed.store.register_devices("fleet-a", ["cam-1"])
    skewed.start()
    try:
        sender = Sender(skewed.url, "us-east-1", credentials=Credentials(AKID, SECRET),
                        sleep=Sleeps())
        result = sender.send(PARAMS)
        assert result.outcome is Outcome.OK, result
        assert result.attempts == 2
        assert sender.stats()["clock_corrections"] == 1
        assert sender.clock_offset_s == pytest.approx(3600, abs=2)
        assert sender.send(PARAMS).attempts == 1  # the correction stays
    finally:
        skewed.stop()


# -- RETRY: each transient failure, then success ------------------------------------------------

@pytest.mark.parametrize(("action", "stat", "code"), [
    (Action.throttle(), "failures_throttled", "ThrottlingException"),
    (Action.error("TooManyRequestsException", 429), "failures_throttled", None),
    (Action.internal_service(), "failures_5xx", "InternalServiceException"),
    (Action.internal_failure(), "failures_5xx", "InternalFailure"),
    (Action.unavailable(), "failures_5xx", "ServiceUnavailable"),
    (Action.error("BadGateway", 502), "failures_5xx", None),
    (Action.slow(1.0), "failures_timeout", "ReadTimeoutError"),
    (Action.reset(), "failures_connection", None),
    (Action.close(), "failures_connection", "ConnectionClosedError"),
], ids=["throttle", "429", "internal-service", "internal-failure", "503", "502",
        "read-timeout", "reset", "close"])
def test_transient_failure_is_retried(srv: ScriptedServer, action: Action, stat: str,
                                      code: str | None) -> None:
    sleeps = Sleeps()
    sender = make(srv, sleep=sleeps)
    srv.script(action, Action.ok())
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts) == (Outcome.OK, 2)
    assert len(srv.requests) == 2 and len(sleeps) == 1
    stats = sender.stats()
    assert stats[stat] == 1 and stats["retries"] == 1 and stats["successes"] == 1
    failures = {k: v for k, v in stats.items() if k.startswith("failures_") and v}
    assert failures == {stat: 1}
    if code is not None:  # and the same failure, not retried, is reported with its code
        srv.script(action)
        alone = make(srv, max_attempts=1).send(PARAMS)
        assert (alone.outcome, alone.error_code) == (Outcome.RETRY, code)
        assert alone.retry_after_s is not None


def test_unreachable_endpoint_is_a_connection_failure() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    sender = Sender(f"http://127.0.0.1:{port}", "us-east-1", credentials=Credentials(AKID, SECRET),
                    sleep=sleeps, connect_timeout=0.5, max_attempts=2)
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts, result.error_code) == (
        Outcome.RETRY, 2, "EndpointConnectionError")
    assert sender.stats()["failures_connection"] == 2 and len(sleeps) == 1


def test_retries_stop_at_max_attempts(srv: ScriptedServer) -> None:
    sleeps = Sleeps()
    sender = make(srv, sleep=sleeps, max_attempts=4)
    srv.script(*[Action.throttle()] * 5)
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts, result.error_code, result.http_status) == (
        Outcome.RETRY, 4, "ThrottlingException", 400)
    assert result.message == "Rate exceeded"
    assert len(srv.requests) == 4 and len(sleeps) == 3  # no sleep after the last attempt
    assert sender.stats()["failures_throttled"] == 4


# -- backoff ---------------------------------------------------------------------------------

def test_backoff_doubles_up_to_the_cap(srv: ScriptedServer) -> None:
    sleeps = Sleeps()
    sender = make(srv, sleep=sleeps, rng=UpperRng(), max_attempts=8, backoff_base=0.5,
                  backoff_cap=4.0)
    srv.script(*[Action.unavailable()] * 8)
    result = sender.send(PARAMS)
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert result.retry_after_s == 4.0  # the next ceiling, for the caller's own wait


def test_backoff_is_full_jitter_within_bounds(srv: ScriptedServer) -> None:
    sleeps = Sleeps()
    sender = make(srv, sleep=sleeps, rng=random.Random(7), max_attempts=6, backoff_base=0.25,
                  backoff_cap=1.0)
    srv.script(*[Action.throttle()] * 6)
    sender.send(PARAMS)
    ceilings = [0.25, 0.5, 1.0, 1.0, 1.0]
    assert len(sleeps) == len(ceilings)
    assert all(0 <= s <= c for s, c in zip(sleeps, ceilings))
    assert len(set(sleeps)) == len(sleeps)  # jittered, not fixed


@given(seed=st.integers(0, 2**32 - 1), retry=st.integers(0, 200),
       base=st.floats(0, 10), extra=st.floats(0, 100))
def test_full_jitter_bounds(seed: int, retry: int, base: float, extra: float) -> None:
    cap = base + extra
    delay = full_jitter(random.Random(seed), retry, base, cap)
    assert 0 <= delay <= min(cap, base * 2.0 ** min(retry, 64))


def test_retry_after_is_honoured_up_to_the_cap(srv: ScriptedServer) -> None:
    sleeps = Sleeps()
    sender = make(srv, sleep=sleeps, rng=ZeroRng(), backoff_cap=10.0)
    srv.script(Action.throttle(retry_after="3"), Action.throttle(retry_after="999"),
               Action.ok())
    assert sender.send(PARAMS).ok
    assert sleeps == [3.0, 10.0]


# -- FATAL -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("action", "stat"), [
    (Action.validation("DeviceName failed to satisfy constraint"), "failures_validation"),
    (Action.error("SerializationException", 400), "failures_validation"),
    (Action.error("UnknownOperationException", 404), "failures_other"),
    (Action.error("RequestEntityTooLargeException", 413), "failures_other"),
])
def test_fatal_is_not_retried(srv: ScriptedServer, action: Action, stat: str) -> None:
    sleeps = Sleeps()
    sender = make(srv, sleep=sleeps)
    srv.script(action)
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts, result.retry_after_s) == (Outcome.FATAL, 1, None)
    assert len(srv.requests) == 1 and sleeps == []
    assert sender.stats()[stat] == 1


def test_parameters_boto3_refuses_are_fatal_without_a_request(srv: ScriptedServer) -> None:
    sender = make(srv)
    result = sender.send({"DeviceName": "cam-1", "DeviceFleetName": "fleet-a"})
    assert (result.outcome, result.attempts, result.error_code) == (
        Outcome.FATAL, 1, "ParamValidationError")
    assert "AgentVersion" in (result.message or "")
    assert srv.requests == []
    assert sender.stats()["failures_validation"] == 1


# -- REFRESH_CREDENTIALS ---------------------------------------------------------------------

@pytest.mark.parametrize("action", [Action.expired_token(), Action.access_denied(),
                                    Action.unrecognized_client(),
                                    Action.error("InvalidSignatureException", 403,
                                                 "The request signature we calculated does "
                                                 "not match the signature you provided.")],
                         ids=["expired-token", "access-denied", "unrecognized", "bad-signature"])
def test_auth_failure_refreshes_credentials_and_retries_once(srv: ScriptedServer,
                                                             action: Action) -> None:
    provider = CountingProvider()
    sleeps = Sleeps()
    sender = make(srv, credentials=provider, sleep=sleeps)
    srv.script(action, Action.ok())
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts) == (Outcome.OK, 2)
    assert [r.access_key_id for r in srv.requests] == [f"{AKID}1", f"{AKID}2"]
    assert sleeps == []  # a refresh retries at once
    stats = sender.stats()
    assert (stats["failures_auth"], stats["credential_refreshes"]) == (1, 1)


def test_auth_failure_after_a_refresh_is_reported(srv: ScriptedServer) -> None:
    provider = CountingProvider()
    sender = make(srv, credentials=provider)
    srv.script(Action.access_denied(), Action.access_denied(), Action.ok())
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts, result.error_code) == (
        Outcome.REFRESH_CREDENTIALS, 2, "AccessDeniedException")
    assert result.retry_after_s is not None
    assert provider.loads == 2 and sender.stats()["credential_refreshes"] == 1


def test_static_credentials_are_not_refreshed(srv: ScriptedServer) -> None:
    sender = make(srv)
    srv.script(Action.expired_token(), Action.ok())
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts) == (Outcome.REFRESH_CREDENTIALS, 1)
    assert sender.stats()["credential_refreshes"] == 0


def test_refresh_happens_even_without_attempts_left(srv: ScriptedServer) -> None:
    provider = CountingProvider()
    sender = make(srv, credentials=provider, max_attempts=1)
    srv.script(Action.expired_token())
    assert sender.send(PARAMS).outcome is Outcome.REFRESH_CREDENTIALS
    assert sender.send(PARAMS).ok
    assert [r.access_key_id for r in srv.requests] == [f"{AKID}1", f"{AKID}2"]


def test_unavailable_credentials_send_nothing(srv: ScriptedServer) -> None:
    class Failing:
        def load(self) -> Credentials:
            raise CredentialsError("cannot reach the IoT credentials provider at h:443")

    sender = make(srv, credentials=Failing())
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts, result.error_code) == (
        Outcome.REFRESH_CREDENTIALS, 0, "CredentialsUnavailable")
    assert "IoT credentials provider" in (result.message or "")
    assert result.retry_after_s is not None
    assert srv.requests == [] and sender.stats()["failures_credentials"] == 1


def test_default_chain_reads_the_environment(srv: ScriptedServer,
                                             monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Any) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_SESSION_TOKEN": TOKEN, "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(name, value)
    sender = make(srv, credentials=None)
    assert sender.send(PARAMS).ok
    assert srv.requests[0].access_key_id == AKID


def test_bad_credentials_argument_is_refused(srv: ScriptedServer) -> None:
    with pytest.raises(TypeError, match="credentials must be"):
        make(srv, credentials=("AKID", "secret"))


# -- CLOCK_SKEW ------------------------------------------------------------------------------

def test_clock_skew_corrects_the_next_x_amz_date(srv: ScriptedServer) -> None:
    """A device clock stuck at 2024-01-01 00:00, a server two hours later."""
    sender = make(srv, clock=lambda: T0)
    srv.script(Action.signature_expired(T0 + 7200), Action.ok())
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts) == (Outcome.OK, 2)
    assert [r.amz_date for r in srv.requests] == ["20240101T000000Z", "20240101T020000Z"]
    assert "Credential=" + AKID + "/20240101/" in srv.requests[1].headers["authorization"]
    stats = sender.stats()
    assert (stats["failures_clock_skew"], stats["clock_corrections"]) == (1, 1)
    assert stats["clock_offset_s"] == 7200.0 and sender.now() == T0 + 7200
    sender.send(PARAMS)
    assert srv.requests[-1].amz_date == "20240101T020000Z"  # later requests keep it


def test_clock_skew_with_the_real_clock(srv: ScriptedServer) -> None:
    sender = make(srv)
    srv.script(Action.signature_expired(time.time() - 3 * 3600))
    assert sender.send(PARAMS).ok
    first, second = (amz_date_epoch(r.amz_date or "") for r in srv.requests)
    assert second - first == pytest.approx(-3 * 3600, abs=3)


def test_clock_skew_without_date_uses_the_message(srv: ScriptedServer) -> None:
    sender = make(srv, clock=lambda: T0)
    srv.script(Action.signature_expired(T0 - 1800, no_date=True))
    assert sender.send(PARAMS).ok
    assert srv.requests[1].amz_date == "20231231T233000Z"


def test_clock_skew_without_any_server_time_is_reported(srv: ScriptedServer) -> None:
    sender = make(srv, clock=lambda: T0)
    srv.script(Action.signature_expired(T0 + 7200, in_message=False, no_date=True))
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts, result.error_code) == (
        Outcome.CLOCK_SKEW, 1, "InvalidSignatureException")
    assert sender.clock_offset_s == 0.0


def test_clock_skew_is_corrected_once_per_send(srv: ScriptedServer) -> None:
    sender = make(srv, clock=lambda: T0)
    srv.script(Action.signature_expired(T0 + 7200), Action.signature_expired(T0 + 9000))
    result = sender.send(PARAMS)
    assert (result.outcome, result.attempts) == (Outcome.CLOCK_SKEW, 2)
    assert sender.clock_offset_s == 9000.0  # the latest answer still corrects the clock
    assert sender.stats()["clock_corrections"] == 2


def test_bad_signature_with_a_far_date_is_clock_skew(srv: ScriptedServer) -> None:
    sender = make(srv, clock=lambda: T0)
    srv.script(Action.error("InvalidSignatureException", 403, "signature mismatch",
                            date=T0 + 3600))
    assert sender.send(PARAMS).ok
    assert srv.requests[1].amz_date == "20240101T010000Z"
    assert sender.stats()["credential_refreshes"] == 0


def test_set_clock_offset_moves_x_amz_date(srv: ScriptedServer) -> None:
    sender = make(srv, clock=lambda: T0)
    sender.set_clock_offset(-86400)
    sender.send(PARAMS)
    assert srv.requests[0].amz_date == "20231231T000000Z"


# -- the Date header as a clock ----------------------------------------------------------------

def test_server_date_reads_responses_errors_and_headers(srv: ScriptedServer) -> None:
    srv.default = Action.ok(date=T0)
    sender = make(srv)
    response = sender.client.send_heartbeat(**PARAMS)
    assert server_date(response) == T0
    assert sender.send(PARAMS).server_time == T0
    srv.script(Action.validation(date=T0 + 5))
    with pytest.raises(ClientError) as info:
        sender.client.send_heartbeat(**PARAMS)
    assert server_date(info.value) == T0 + 5
    assert server_date({"Date": "Mon, 01 Jan 2024 00:00:00 GMT"}) == T0
    assert server_date({"date": "not a date"}) is None
    assert server_date({}) is None and server_date(None) is None


# -- secrets, stats, threads, construction ---------------------------------------------------

def test_secrets_never_reach_logs_or_reprs(srv: ScriptedServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # botocore's DEBUG logs print whole requests
    provider = CountingProvider()
    sender = make(srv, credentials=provider)
    srv.script(Action.expired_token(), Action.ok(), Action.throttle(), Action.ok(),
               Action.error("InvalidSignatureException", 403,
                            f"Credential={AKID}2/20240101 {SECRET}2 {TOKEN}"))
    results = [sender.send(PARAMS), sender.send(PARAMS), sender.send(PARAMS)]
    assert any("Sending http request" in r.getMessage() for r in caplog.records)
    assert any("<redacted>" in r.getMessage() for r in caplog.records)
    texts = [r.getMessage() for r in caplog.records] + [caplog.text, repr(sender),
                                                        repr(results), repr(sender.stats())]
    for secret in (AKID, SECRET, TOKEN):
        assert not any(secret in t for t in texts), secret


def test_stats_count_every_attempt(srv: ScriptedServer) -> None:
    sender = make(srv, clock=lambda: T0)
    srv.script(Action.throttle(), Action.ok(),                      # send 1: 2 attempts
               Action.validation(),                                 # send 2: fatal
               Action.signature_expired(T0 + 3600), Action.ok())    # send 3: corrected
    for _ in range(3):
        sender.send(PARAMS)
    stats = sender.stats()
    assert isinstance(stats["clock_offset_s"], float)
    assert all(isinstance(v, int) for k, v in stats.items() if k != "clock_offset_s")
    assert {k: v for k, v in stats.items() if v} == {
        "sends": 3, "attempts": 5, "successes": 2, "failures_throttled": 1,
        "failures_validation": 1, "failures_clock_skew": 1, "retries": 1,
        "clock_corrections": 1, "clock_offset_s": 3600.0,
    }


def test_concurrent_sends_are_counted_exactly(srv: ScriptedServer) -> None:
    sender = make(srv)
    threads = [threading.Thread(target=lambda: [sender.send(PARAMS) for _ in range(5)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = sender.stats()
    assert stats["sends"] == stats["attempts"] == stats["successes"] == 20
    assert len(srv.requests) == 20


@pytest.mark.parametrize("kwargs", [
    {"endpoint_url": "edge.example.com"}, {"region": ""}, {"max_attempts": 0},
    {"max_attempts": True}, {"read_timeout": 0}, {"backoff_base": 2, "backoff_cap": 1},
])
def test_constructor_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    args = {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1"} | kwargs
    with pytest.raises(ValueError):
        Sender(args.pop("endpoint_url"), args.pop("region"), **args)


def test_from_config(srv: ScriptedServer) -> None:
    cfg = AgentConfig(device_name="cam-1", fleet_name="fleet-a", endpoint_url=srv.url,
                      region="eu-west-1", aws_access_key_id=AKID, aws_secret_access_key=SECRET,
                      max_attempts=5, read_timeout_s=0.5)
    with Sender.from_config(cfg, sleep=Sleeps()) as sender:
        assert sender.max_attempts == 5 and sender.region == "eu-west-1"
        assert sender.send(PARAMS).ok
    assert "/eu-west-1/sagemaker/" in srv.requests[0].headers["authorization"]


def test_importing_sender_and_config_loads_no_botocore() -> None:
    """No work at import time: botocore is imported when a Sender or credentials are built."""
    import subprocess
    import sys

    code = ("import sys, edgetelemetry.agent.sender, edgetelemetry.agent.config; "
            "sys.exit('botocore' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
