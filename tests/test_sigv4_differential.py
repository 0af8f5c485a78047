"""The endpoint's SigV4 verifier held to botocore's signer (the agent's), request by request.

Seeded random requests (methods, paths with dot segments, empty segments, encoded slashes and
non-ASCII text, query strings with repeats, empty values and special characters, repeated and
mixed-case headers with odd whitespace, with and without ``x-amz-content-sha256`` and session
tokens) are signed by ``botocore.auth.SigV4Auth`` as a client signs them.  Each must verify, its
canonical request must equal the one botocore signed, and each must be refused after a one-byte
change of its body, of a signed header's value, of its path or of its query.

The oracle for requests botocore never signed itself (tampered ones, odd targets) is the
verifier's former implementation: the request rebuilt as a botocore ``AWSRequest`` holding
exactly the headers the client lists as signed, canonicalised by botocore's ``SigV4Auth``.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4Auth, _host_from_url
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from edgetelemetry.agent.signing import offset_sigv4_auth
from edgetelemetry.server.errors import ServiceError
from edgetelemetry.server.sigv4 import (
    Credential,
    SigV4Verifier,
    _canonical_request,
    _parse_amz_date,
)

REGION = "eu-central-1"
SERVICE = "sagemaker"
ENDPOINT = "http://edge.example.test:8443"
PLAIN = Credential("AKIDDIFFPLAIN", "plain/Secret+key=0123456789abcdefghij")
TOKENED = Credential("AKIDDIFFTOKEN", "sécret-ünïcode-key", session_token="FwoGZXIvYXdzEXAMPLE==")
CASES = 3000

_SIGNED_HEADERS_RE = re.compile(r"SignedHeaders=([^,]*)")

PATHS = ["/", "//a/./b/../c", "/SendHeartbeat", "/a/b/", "/..", "/./", "/a%2Fb", "/%2F", ""]
SEGMENTS = [
    "a", "b", "Zz", ".", "..", "", "%2F", "%2f", "x%20y", "é", "日本", "~u", "a+b", "a=b",
    "!$&'()*,;:@", "Ünï", "-_.", "%41", "...", "a b", "%", "%zz",
]
QUERY_PARTS = ["a", "A", "b", "a%20b", "", "x+y", "%3D", "é", "k~", "z*", "%2F/", "日", "a-b"]
HEADER_NAMES = [
    "X-Custom", "x-custom", "X-CUSTOM", "X-Other-Thing", "x-amz-meta-a", "X-Empty", "User-Agent",
    "Content-Type", "x-amz-target",
]
HEADER_VALUES = [
    "a", "  a  b  ", "a\tb", "", " ", "é", "naïve 日本", "a,b", "x  y\t\tz", "\u00a0nbsp\u00a0",
    "application/x-amz-json-1.1", "Mixed Case  Value ",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "post"]


class RecordingSigV4(SigV4Auth):
    """botocore's signer, unchanged, remembering the canonical request it signed."""

    canonical = ""

    def canonical_request(self, request: AWSRequest) -> str:
        self.canonical = super().canonical_request(request)
        return self.canonical


class _ExactHeadersSigV4(SigV4Auth):
    """botocore's signer canonicalising every header it is given (other SDKs sign headers
    botocore never does)."""

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name, value in request.headers.items():
            header_map[name.lower()] = value
        return header_map


def botocore_canonical(
    method: str, target: str, pairs: Iterable[tuple[str, str]], signed_headers: str, body: bytes
) -> str | None:
    """The former verifier's canonical request, by botocore: None where it refused."""
    signed = signed_headers.split(";")
    wanted = set(signed)
    request = AWSRequest(method=method, url="http://sigv4.invalid" + target, data=body)
    present = set()
    for name, value in pairs:
        if name.lower() in wanted:
            request.headers[name.lower()] = value
            present.add(name.lower())
    if present != wanted:
        return None
    signer = _ExactHeadersSigV4(Credentials("AKID", "unused"), SERVICE, REGION)
    if signer.signed_headers(signer.headers_to_sign(request)) != ";".join(signed):
        return None
    return str(signer.canonical_request(request))


def by_name(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    return grouped


def ours(method: str, target: str, pairs: list[tuple[str, str]], signed: str, body: bytes) -> Any:
    return _canonical_request(
        method, target, by_name(pairs), signed, hashlib.sha256(body).hexdigest()
    )


def signed_headers_of(pairs: list[tuple[str, str]]) -> str:
    auth = next(v for k, v in pairs if k.lower() == "authorization")
    match = _SIGNED_HEADERS_RE.search(auth)
    assert match is not None
    return match.group(1)


def random_path(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(PATHS)
    path = "/" + "/".join(rng.choice(SEGMENTS) for _ in range(rng.randint(0, 5)))
    return path + ("/" if rng.random() < 0.2 else "")


def random_query(rng: random.Random) -> str:
    if rng.random() < 0.35:
        return ""
    items = []
    for _ in range(rng.randint(1, 6)):
        key, value = rng.choice(QUERY_PARTS), rng.choice(QUERY_PARTS)
        items.append(rng.choice([f"{key}={value}", key, f"{key}=", f"={value}", f"{key}={key}"]))
    return "&".join(items)


def mutate_char(text: str, index: int) -> str:
    """``text`` with the character at ``index`` replaced by another non-space, non-delimiter."""
    replacement = "Q" if text[index] != "Q" else "R"
    return text[:index] + replacement + text[index + 1:]


class Signed:
    """One request as a client sends it: botocore signs, the HTTP layer adds Host if absent."""

    def __init__(self, rng: random.Random) -> None:
        self.cred = rng.choice([PLAIN, TOKENED])
        self.method = rng.choice(METHODS)
        self.path = random_path(rng)
        self.query = random_query(rng)
        self.body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 17, 200])))
        url = ENDPOINT + self.target
        request = AWSRequest(method=self.method, url=url, data=self.body)
        host_header = rng.random() < 0.7
        if host_header:
            request.headers[rng.choice(["Host", "HOST", "host"])] = _host_from_url(url)
        for _ in range(rng.randint(0, 5)):
            request.headers[rng.choice(HEADER_NAMES)] = rng.choice(HEADER_VALUES)
        if rng.random() < 0.3:
            request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(self.body).hexdigest()
        credentials = Credentials(
            self.cred.access_key_id, self.cred.secret_access_key, self.cred.session_token
        )
        signer = RecordingSigV4(credentials, SERVICE, REGION)
        signer.add_auth(request)
        self.botocore_canonical = signer.canonical
        self.pairs = list(request.headers.items())
        if not host_header:
            self.pairs.append(("Host", _host_from_url(url)))
        self.signed_headers = signed_headers_of(self.pairs)

    @property
    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    def canonical(self, **changes: Any) -> str | None:
        fields = {"method": self.method, "target": self.target, "pairs": self.pairs,
                  "signed_headers": self.signed_headers, "body": self.body, **changes}
        return botocore_canonical(**fields)


def assert_refused(verifier: SigV4Verifier, method: str, target: str,
                   pairs: list[tuple[str, str]], body: bytes) -> None:
    with pytest.raises(ServiceError) as refused:
        verifier.verify(method, target, pairs, body)
    assert refused.value.code == "InvalidSignatureException", refused.value.message


def test_botocore_signed_requests_verify_and_one_byte_changes_do_not() -> None:
    rng = random.Random(20261203)
    verifier = SigV4Verifier(
        {c.access_key_id: c for c in (PLAIN, TOKENED)}, REGION, time.time, service=SERVICE
    )
    started = time.perf_counter()
    for case in range(CASES):
        req = Signed(rng)
        where = f"case {case}: {req.method} {req.target!r} {req.pairs!r}"

        assert verifier.verify(req.method, req.target, req.pairs, req.body) is req.cred, where
        canonical = ours(req.method, req.target, req.pairs, req.signed_headers, req.body)
        assert canonical == req.botocore_canonical, where
        assert req.canonical() == req.botocore_canonical, where  # the oracle agrees too

        body = bytearray(req.body or b"x")
        if req.body:
            body[rng.randrange(len(body))] ^= 0x01
        assert req.canonical(body=bytes(body)) != req.botocore_canonical or (
            "x-amz-content-sha256" in req.signed_headers  # the header, not the body, is signed
        ), where
        assert_refused(verifier, req.method, req.target, req.pairs, bytes(body))

        changeable = [
            i for i, (name, value) in enumerate(req.pairs)
            if name.lower() in req.signed_headers.split(";")
            and name.lower() not in ("x-amz-date", "x-amz-security-token", "x-amz-content-sha256")
        ]
        index = rng.choice(changeable)
        name, value = req.pairs[index]
        visible = [i for i, c in enumerate(value) if not c.isspace()]
        value = mutate_char(value, rng.choice(visible)) if visible else value + "Q"
        pairs = req.pairs[:index] + [(name, value)] + req.pairs[index + 1:]
        assert req.canonical(pairs=pairs) != req.botocore_canonical, where
        assert ours(req.method, req.target, pairs, req.signed_headers, req.body) == req.canonical(
            pairs=pairs), where
        assert_refused(verifier, req.method, req.target, pairs, req.body)

        path = mutate_char(req.path, len(req.path) - 1) if len(req.path) > 1 else "/Q"
        target = path + (f"?{req.query}" if req.query else "")
        assert req.canonical(target=target) != req.botocore_canonical, where
        assert ours(req.method, target, req.pairs, req.signed_headers, req.body) == req.canonical(
            target=target), where
        assert_refused(verifier, req.method, target, req.pairs, req.body)

        query = mutate_char(req.query, len(req.query) - 1) if req.query else "Q"
        target = f"{req.path}?{query}"
        assert req.canonical(target=target) != req.botocore_canonical, where
        assert ours(req.method, target, req.pairs, req.signed_headers, req.body) == req.canonical(
            target=target), where
        assert_refused(verifier, req.method, target, req.pairs, req.body)
    # a bound on a slow machine, not a timing gate: the cases must stay cheap enough for CI
    assert time.perf_counter() - started < 60


@pytest.mark.parametrize(
    "target",
    [
        "/a#fragment", "/a?b=c#frag?x", "/a?", "/?", "?a=b", "", "*", "http://other.test/x?y=1",
        "/a\tb", "/a\nb?c=d", "/a\r/../b", " /a", "/é/%zz", "/a/%2e%2e/b", "/a/.%2E/b",
        "//", "///a//b///", "/a/b/..", "/a/b/.", "/../../a", "/a?b=1&b=0&a=2&=&&c",
        "/a?x=%ZZ&y=é&z=a b", "/a?b=c=d&b", "a/b", ":80/x",
    ],
)
def test_odd_targets_match_botocore(target: str) -> None:
    pairs = [("Host", "h"), ("X-Amz-Date", "20260101T000000Z")]
    signed = "host;x-amz-date"
    for method in ("POST", "get"):
        assert ours(method, target, pairs, signed, b"{}") == botocore_canonical(
            method, target, pairs, signed, b"{}"
        )


@pytest.mark.parametrize(
    "signed",
    [
        "x-amz-date;host",  # unsorted
        "Host;x-amz-date",  # upper case
        "host;host;x-amz-date",  # repeated
        "host;x-amz-date;x-missing",  # listed, not sent
        "host; x-amz-date",  # padded
        "host;;x-amz-date",  # empty name
        "host;x-amz-date;",
    ],
)
def test_signed_headers_no_signer_writes_are_refused(signed: str) -> None:
    pairs = [("Host", "h"), ("X-Amz-Date", "20260101T000000Z"), (" x-amz-date", "x")]
    assert ours("POST", "/", pairs, signed, b"") is None
    assert botocore_canonical("POST", "/", pairs, signed, b"") is None


def test_repeated_headers_and_whitespace_match_botocore() -> None:
    pairs = [
        ("Host", "h"), ("X-Rep", "  one   two "), ("x-rep", "three"), ("X-REP", ""),
        ("X-Amz-Date", "20260101T000000Z"), ("x-amz-content-sha256", " abc "),
        ("X-Wide", "é\u00a0日本\u2003end\x1f"),
    ]
    signed = "host;x-amz-content-sha256;x-amz-date;x-rep;x-wide"
    canonical = ours("POST", "/", pairs, signed, b"body")
    assert canonical == botocore_canonical("POST", "/", pairs, signed, b"body")
    assert "x-rep:one two,three,\n" in canonical
    assert canonical.endswith("\n abc ")  # a signed content hash is taken as sent


def test_text_no_signer_can_encode_is_refused_not_an_error() -> None:
    verifier = SigV4Verifier({PLAIN.access_key_id: PLAIN}, REGION, time.time)
    req = AWSRequest(method="POST", url=ENDPOINT + "/SendHeartbeat", data=b"{}")
    req.headers["X-Odd"] = "ok"
    SigV4Auth(Credentials(PLAIN.access_key_id, PLAIN.secret_access_key), SERVICE, REGION).add_auth(
        req
    )
    pairs = list(req.headers.items()) + [("Host", _host_from_url(ENDPOINT))]
    verifier.verify("POST", "/SendHeartbeat", pairs, b"{}")
    surrogate = [(k, "\udc80" if k == "X-Odd" else v) for k, v in pairs]
    assert_refused(verifier, "POST", "/SendHeartbeat", surrogate, b"{}")
    assert_refused(verifier, "POST", "/Send\udc80Heartbeat", pairs, b"{}")
    assert_refused(verifier, "POST", "/SendHeartbeat?a=\udc80", pairs, b"{}")
    assert_refused(verifier, "POST", "\u2100/x", pairs, b"{}")  # urlsplit refuses this URL


def _sign_at(cred: Credential, when: float) -> tuple[list[tuple[str, str]], bytes]:
    body = b'{"a": 1}'
    request = AWSRequest(method="POST", url=ENDPOINT + "/SendHeartbeat", data=body)
    request.headers["Host"] = _host_from_url(ENDPOINT)
    credentials = Credentials(cred.access_key_id, cred.secret_access_key, cred.session_token)
    offset_sigv4_auth(credentials, SERVICE, REGION, when).add_auth(request)
    return list(request.headers.items()), body


def test_signing_keys_are_cached_bounded_and_dropped_with_their_credentials() -> None:
    now = [1_700_000_000.0]
    verifier = SigV4Verifier({PLAIN.access_key_id: PLAIN}, REGION, lambda: now[0])
    keys = verifier._keyring.signing_keys
    for day in range(40):
        now[0] = 1_700_000_000.0 + day * 86_400
        for _ in range(3):
            verifier.verify("POST", "/SendHeartbeat", *_sign_at(PLAIN, now[0]))
        assert len(keys) == min(day + 1, 16)  # one key per date; the oldest go past the bound
    text = repr(verifier._keyring) + repr(keys)
    assert PLAIN.secret_access_key not in text and "AWS4" not in text

    rotated = Credential(PLAIN.access_key_id, "a-new-secret-after-rotation")
    old_pairs, body = _sign_at(PLAIN, now[0])
    verifier.replace_credentials({rotated.access_key_id: rotated})
    assert len(verifier._keyring.signing_keys) == 0
    assert_refused(verifier, "POST", "/SendHeartbeat", old_pairs, body)
    assert verifier.verify("POST", "/SendHeartbeat", *_sign_at(rotated, now[0])) is rotated
    assert len(verifier._keyring.signing_keys) == 1


def test_the_signer_used_here_is_the_one_botocore_clients_use() -> None:
    """The differential test's client is botocore's stock SigV4 signer: a ``sagemaker-edge``
    client signs with ``v4`` under the signing name ``sagemaker`` (no S3-style unnormalised
    paths)."""
    assert botocore.auth.AUTH_TYPE_MAPS["v4"] is SigV4Auth
    import boto3

    client = boto3.client(
        "sagemaker-edge", region_name=REGION, endpoint_url=ENDPOINT,
        aws_access_key_id="AKID", aws_secret_access_key="secret",
    )
    assert client.meta.service_model.signing_name == SERVICE
    assert client.meta.service_model.signature_version == "v4"


def test_x_amz_date_is_read_as_strptime_reads_it() -> None:
    """The verifier reads X-Amz-Date field by field: the same times, and the same refusals, as
    ``datetime.strptime`` with ``%Y%m%dT%H%M%SZ``."""
    rng = random.Random(15)
    stamps = [f"{y:04d}0101T000000Z" for y in range(0, 10000, 7)]
    stamps += [f"2024{m:02d}{d:02d}T000000Z" for m in range(100) for d in range(100)]
    stamps += [f"20240229T{rng.randrange(100):02d}{rng.randrange(100):02d}"
               f"{rng.randrange(100):02d}Z" for _ in range(5000)]
    for stamp in stamps:
        try:
            expected: object = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=timezone.utc)
        except ValueError:
            expected = ValueError
        try:
            got: object = _parse_amz_date(stamp)
        except ValueError:
            got = ValueError
        assert got == expected, stamp
