"""IotCredentialProvider against a real HTTPS server on 127.0.0.1 that demands client certificates.

A throwaway CA, server certificate and device certificates are made per module with
``cryptography``; a second CA signs a "rogue" device certificate the server must refuse.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import RefreshableCredentials
from scripted_server import Action, ScriptedServer

from edgetelemetry.agent.credentials import (
    CredentialsError,
    IotCredentialProvider,
    IotCredentials,
    split_iot_credentials_url,
)
from edgetelemetry.agent.sender import Outcome, Sender

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

ALIAS = "SageMakerEdge-fleet-a"
THING = "cam-1"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).timestamp()


# -- a throwaway PKI --------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    device_cert: Path
    device_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


def _name(cn: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool = False,
          server: bool = False) -> Any:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: Any = None, key: Any = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    return path


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in
            ("ca", "server", "device", "rogue_ca", "rogue")}
    ca = _cert("test root", keys["ca"], "test root", keys["ca"], ca=True)
    rogue_ca = _cert("rogue root", keys["rogue_ca"], "rogue root", keys["rogue_ca"], ca=True)
    return Pki(
        ca=_write(d / "ca.pem", ca),
        server_cert=_write(d / "server.pem", _cert("127.0.0.1", keys["server"], "test root",
                                                   keys["ca"], server=True)),
        server_key=_write(d / "server.key", key=keys["server"]),
        device_cert=_write(d / "device.pem", _cert(THING, keys["device"], "test root",
                                                   keys["ca"])),
        device_key=_write(d / "device.key", key=keys["device"]),
        rogue_ca=_write(d / "rogue-ca.pem", rogue_ca),
        rogue_cert=_write(d / "rogue.pem", _cert(THING, keys["rogue"], "rogue root",
                                                 keys["rogue_ca"])),
        rogue_key=_write(d / "rogue.key", key=keys["rogue"]),
    )


def creds_answer(n: int, expiration: float, date: float | None = None) -> Action:
    body = {"credentials": {
        "accessKeyId": f"ASIAIOTTEST{n:05d}",
        "secretAccessKey": f"iot-secret-{n:05d}/xyz",
        "sessionToken": f"iot-token-{n:05d}",
        "expiration": dt.datetime.fromtimestamp(expiration, dt.timezone.utc)
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
    }}
    return Action.ok(body, date=date)


@pytest.fixture(name="iot")
def iot_fixture(pki: Pki) -> Iterator[ScriptedServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, as the IoT credentials provider
    with ScriptedServer(ssl_context=ctx) as server:
        yield server


def provider(iot: ScriptedServer, pki: Pki, **kw: Any) -> IotCredentialProvider:
    kw.setdefault("cert_file", pki.device_cert)
    kw.setdefault("key_file", pki.device_key)
    kw.setdefault("ca_file", pki.ca)
    kw.setdefault("timeout", 2.0)
    return IotCredentialProvider(iot.url, ALIAS, THING, **kw)


def secrets_of(n: int) -> tuple[str, str]:
    return f"iot-secret-{n:05d}/xyz", f"iot-token-{n:05d}"


# -- the request -------------------------------------------------------------------------------

def test_fetch_over_mutual_tls(iot: ScriptedServer, pki: Pki) -> None:
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    iot.script(creds_answer(1, now + 3600, date=now))
    p = provider(iot, pki)
    creds = p.fetch()
    assert isinstance(creds, IotCredentials)
    assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == (
        "ASIAIOTTEST00001", *secrets_of(1))
    assert creds.server_date == pytest.approx(now, abs=1) and p.last_server_date
    (req,) = iot.requests
    assert (req.method, req.path) == ("GET", f"/role-aliases/{ALIAS}/credentials")
    assert req.headers["x-amzn-iot-thingname"] == THING
    for secret in secrets_of(1) + ("ASIAIOTTEST00001",):
        assert secret not in repr(creds) and secret not in repr(p)


def test_the_server_demands_a_client_certificate(iot: ScriptedServer, pki: Pki) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca))  # trusts the server, no client cert
    conn = http.client.HTTPSConnection("127.0.0.1", iot.port, context=ctx, timeout=2)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        conn.request("GET", f"/role-aliases/{ALIAS}/credentials")
        conn.getresponse().read()
    conn.close()
    assert iot.requests == []


def test_an_untrusted_device_certificate_is_a_clear_error(iot: ScriptedServer,
                                                         pki: Pki) -> None:
    p = provider(iot, pki, cert_file=pki.rogue_cert, key_file=pki.rogue_key)
    with pytest.raises(CredentialsError, match="127.0.0.1.*refused the device certificate"):
        p.fetch()
    assert iot.requests == []


def test_an_untrusted_endpoint_is_refused(iot: ScriptedServer, pki: Pki) -> None:
    p = provider(iot, pki, ca_file=pki.rogue_ca)
    with pytest.raises(CredentialsError, match="TLS with 127.0.0.1.*not trusted by ca_file"):
        p.fetch()
    assert iot.requests == []


def test_missing_certificate_file_is_named(iot: ScriptedServer, pki: Pki,
                                           tmp_path: Path) -> None:
    p = provider(iot, pki, cert_file=tmp_path / "nope.pem")
    with pytest.raises(CredentialsError, match="nope.pem"):
        p.fetch()


@pytest.mark.parametrize(("action", "pattern"), [
    (Action.error("ForbiddenException", 403, "Access Denied"), r"HTTP 403 \(Access Denied\)"),
    (Action(status=200, body=b"<html>not json"), "not JSON"),
    (Action.ok({"credentials": {"accessKeyId": "A"}}), "secretAccessKey, sessionToken"),
    (Action.ok({"nothing": 1}), '"credentials"'),
    (creds_answer(1, T0 - 10, date=T0), "already expired"),
])
def test_bad_answers_are_clear_errors(iot: ScriptedServer, pki: Pki, action: Action,
                                      pattern: str) -> None:
    iot.script(action)
    with pytest.raises(CredentialsError, match=pattern) as info:
        provider(iot, pki).fetch()
    for secret in secrets_of(1):
        assert secret not in str(info.value)


def test_unreachable_endpoint_is_a_clear_error(pki: Pki) -> None:
    p = IotCredentialProvider("https://127.0.0.1:9", ALIAS, THING, pki.device_cert,
                              pki.device_key, pki.ca, timeout=1)
    with pytest.raises(CredentialsError, match="cannot reach the IoT credentials provider"):
        p.fetch()


# -- as a refreshing botocore source -----------------------------------------------------------

def test_load_refreshes_before_expiry(iot: ScriptedServer, pki: Pki) -> None:
    now = [T0]
    iot.script(creds_answer(1, T0 + 3600, date=T0), creds_answer(2, T0 + 7200, date=T0 + 3000))
    p = provider(iot, pki, clock=lambda: now[0])
    creds = p.load()
    assert isinstance(creds, RefreshableCredentials)
    assert creds.get_frozen_credentials().access_key == "ASIAIOTTEST00001"
    now[0] = T0 + 2000  # well before expiry: no new request
    assert creds.get_frozen_credentials().access_key == "ASIAIOTTEST00001"
    assert len(iot.requests) == 1
    now[0] = T0 + 3000  # within botocore's refresh window (15 min before expiry)
    assert creds.get_frozen_credentials().access_key == "ASIAIOTTEST00002"
    assert len(iot.requests) == 2 and p.fetches == 2


def test_expiry_follows_the_servers_date_not_a_wrong_device_clock(iot: ScriptedServer,
                                                                  pki: Pki) -> None:
    """A device without an RTC thinks it is 1970; the lifetime still counts from now."""
    device_now = [1_000_000.0]
    iot.script(creds_answer(1, T0 + 3600, date=T0), creds_answer(2, T0 + 7200, date=T0 + 3600))
    p = provider(iot, pki, clock=lambda: device_now[0])
    creds = p.load()
    assert p.last_server_date == T0
    device_now[0] += 1800  # half the lifetime on the device's own clock: still valid
    creds.get_frozen_credentials()
    assert len(iot.requests) == 1
    device_now[0] += 1790  # past botocore's mandatory window: refreshed
    assert creds.get_frozen_credentials().access_key == "ASIAIOTTEST00002"


def test_missing_expiration_means_the_default_hour(iot: ScriptedServer, pki: Pki) -> None:
    iot.script(Action.ok({"credentials": {"accessKeyId": "ASIAX0000001", "secretAccessKey": "s",
                                          "sessionToken": "t"}}, date=T0))
    creds = provider(iot, pki, clock=lambda: T0).fetch()
    assert creds.local_expiry == T0 + 3600


def test_sender_signs_with_iot_credentials_and_refetches_on_auth_errors(
        iot: ScriptedServer, pki: Pki) -> None:
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    iot.script(creds_answer(1, now + 3600), creds_answer(2, now + 3600))
    p = provider(iot, pki)
    with ScriptedServer() as edge:
        edge.script(Action.expired_token(), Action.ok())
        sender = Sender(edge.url, "us-east-1", credentials=p, sleep=lambda s: None)
        result = sender.send({"AgentVersion": "1", "DeviceName": THING,
                              "DeviceFleetName": "fleet-a"})
        assert (result.outcome, result.attempts) == (Outcome.OK, 2)
        assert [r.access_key_id for r in edge.requests] == ["ASIAIOTTEST00001",
                                                            "ASIAIOTTEST00002"]
        assert edge.requests[1].headers["x-amz-security-token"] == secrets_of(2)[1]
    assert len(iot.requests) == 2


def test_sender_reports_an_iot_outage_without_sending(pki: Pki) -> None:
    p = IotCredentialProvider("https://127.0.0.1:9", ALIAS, THING, pki.device_cert,
                              pki.device_key, pki.ca, timeout=1)
    with ScriptedServer() as edge:
        result = Sender(edge.url, "us-east-1", credentials=p).send(
            {"AgentVersion": "1", "DeviceName": THING, "DeviceFleetName": "fleet-a"})
        assert edge.requests == []
    assert (result.outcome, result.error_code) == (Outcome.REFRESH_CREDENTIALS,
                                                   "CredentialsUnavailable")


# -- construction --------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("abc.credentials.iot.us-east-1.amazonaws.com",
     ("https://abc.credentials.iot.us-east-1.amazonaws.com", None)),
    ("https://h.example:8443", ("https://h.example:8443", None)),
    ("https://h.example/role-aliases/SageMakerEdge-f/credentials",
     ("https://h.example", "SageMakerEdge-f")),
])
def test_split_iot_credentials_url(url: str, expected: tuple[str, str | None]) -> None:
    assert split_iot_credentials_url(url) == expected


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"endpoint": "http://h.example"}, "https"),
    ({"endpoint": "https://h.example/other/path"}, "expected a host"),
    ({"endpoint": "https://h.example/role-aliases/other/credentials"}, "names role alias"),
    ({"role_alias": "bad/alias"}, "role alias"),
    ({"thing_name": "bad thing"}, "thing name"),
    ({"timeout": 0}, "timeout"),
])
def test_bad_settings_are_refused(pki: Pki, kwargs: dict[str, Any], pattern: str) -> None:
    args: dict[str, Any] = {"endpoint": "h.example", "role_alias": ALIAS, "thing_name": THING,
                            "cert_file": pki.device_cert, "key_file": pki.device_key}
    timeout = kwargs.pop("timeout", 5.0)
    args.update(kwargs)
    with pytest.raises(CredentialsError, match=pattern):
        IotCredentialProvider(**args, timeout=timeout)


def test_a_shared_device_key_is_warned_about(pki: Pki, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "open.key"
    key.write_bytes(pki.device_key.read_bytes())
    os.chmod(key, 0o644)
    with caplog.at_level(logging.WARNING, logger="edgetelemetry.agent.credentials"):
        IotCredentialProvider("h.example", ALIAS, THING, pki.device_cert, key)
    assert "accessible by group or others" in caplog.text


def test_error_message_from_the_service_is_shown(iot: ScriptedServer, pki: Pki) -> None:
    iot.script(Action(status=403, body=json.dumps({"message": "Certificate is inactive"})
                      .encode(), headers=(("Date", formatdate(T0, usegmt=True)),)))
    with pytest.raises(CredentialsError, match="Certificate is inactive"):
        provider(iot, pki).fetch()
