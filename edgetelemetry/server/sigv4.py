"""Server-side AWS Signature Version 4 verification, computed by botocore's own signer.

The expected signature is not hand-written: the request is rebuilt as a ``botocore.awsrequest.
AWSRequest`` holding exactly the headers the client says it signed, and ``botocore.auth.SigV4Auth``
computes the canonical request, string to sign and signature from it with the configured secret.
What is written here is what a signer never does: parse and check the ``Authorization`` header,
the credential scope, the clock skew (15 minutes, as AWS), the session token and the payload hash,
and choose AWS's error code for each failure.  Signatures are compared in constant time.

Secrets and session tokens never appear in a message, a log record or a ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from ..heartbeat.service import SIGNING_NAME
from .errors import CredentialsFileError, ServiceError
from .private_file import read_private

__all__ = [
    "MAX_SKEW_SECONDS",
    "Credential",
    "SigV4Verifier",
    "load_credentials_file",
    "normalize_credentials",
]

logger = logging.getLogger(__name__)

MAX_SKEW_SECONDS = 15 * 60
_ALGORITHM = "AWS4-HMAC-SHA256"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9_+=,.@-]{1,128}")
_CREDENTIALS_FILE_MAX = 1 << 20

_BAD_TOKEN = "The security token included in the request is invalid."
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation "
    "for details."
)


@dataclass(frozen=True)
class Credential:
    """One access key the endpoint accepts.

    ``session_token``: when set, requests must carry it in ``X-Amz-Security-Token`` (temporary
    credentials); when unset, a request carrying a token is refused.  ``fleets``: when set, the key
    may only speak for devices of these fleets (others get ``AccessDeniedException``).
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    fleets: frozenset[str] | None = None

    def allows_fleet(self, fleet: str) -> bool:
        return self.fleets is None or fleet in self.fleets


def _credential(key: str, spec: object, where: str) -> Credential:
    if not isinstance(key, str) or _ACCESS_KEY_RE.fullmatch(key) is None:
        raise CredentialsFileError(
            f"{where}: access key id {key!r} must be 1-128 characters of A-Z a-z 0-9 _+=,.@-"
        )
    if isinstance(spec, Credential):
        if spec.access_key_id != key:
            raise CredentialsFileError(f"{where}: entry {key!r} holds a credential for another key")
        return spec
    if isinstance(spec, str):
        spec = {"secret_access_key": spec}
    if not isinstance(spec, Mapping):
        raise CredentialsFileError(
            f"{where}: entry {key!r} must be a secret string or an object with secret_access_key"
        )
    unknown = set(spec) - {"secret_access_key", "session_token", "fleets"}
    if unknown:
        raise CredentialsFileError(
            f"{where}: entry {key!r} has unknown fields {sorted(map(str, unknown))}; known: "
            "secret_access_key, session_token, fleets"
        )
    secret = spec.get("secret_access_key")
    if not isinstance(secret, str) or not secret:
        raise CredentialsFileError(f"{where}: entry {key!r} needs a non-empty secret_access_key")
    token = spec.get("session_token")
    if token is not None and (not isinstance(token, str) or not token):
        raise CredentialsFileError(f"{where}: entry {key!r}: session_token must be a string")
    fleets = spec.get("fleets")
    if fleets is not None:
        if not isinstance(fleets, list) or not all(isinstance(f, str) for f in fleets):
            raise CredentialsFileError(f"{where}: entry {key!r}: fleets must be a list of names")
        fleets = frozenset(fleets)
    return Credential(key, secret, token, fleets)


def normalize_credentials(
    credentials: Mapping[str, str | Mapping[str, Any] | Credential], where: str = "credentials"
) -> dict[str, Credential]:
    """``{access_key_id: secret | {"secret_access_key", "session_token"?, "fleets"?}}`` -> checked.

    Raises ``CredentialsFileError`` (never showing a secret) when an entry is malformed.
    """
    if not isinstance(credentials, Mapping):
        raise CredentialsFileError(f"{where}: must be a JSON object keyed by access key id")
    return {key: _credential(key, spec, where) for key, spec in credentials.items()}


def load_credentials_file(path: str | os.PathLike[str]) -> dict[str, Credential]:
    """Read a credentials JSON file that only its owner can read (mode 0600 or 0400).

    Refuses (``CredentialsFileError``) a file that is not a regular file, is owned by another
    user, grants any group or other permission, is larger than 1 MiB, or is not the JSON of
    ``normalize_credentials``.  The checks are made on the opened descriptor, not the path.
    """
    name = os.fspath(path)
    try:
        raw = read_private(name, "credentials file", _CREDENTIALS_FILE_MAX, CredentialsFileError)
    except OSError as exc:
        raise CredentialsFileError(f"cannot open credentials file {name}: {exc.strerror}") from None
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        # JSONDecodeError's str() names the position only, never the document's content.
        where = (
            f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        )
        raise CredentialsFileError(
            f"credentials file {name} is not valid JSON {where}".rstrip()
        ) from None
    return normalize_credentials(document, where=f"credentials file {name}")


def load_serving_credentials(path: str) -> dict[str, Credential]:
    """The keys a serving endpoint reloads on SIGHUP: ``load_credentials_file``, and refused
    (``CredentialsFileError``) when the file holds no key, so a reload never locks out every
    device."""
    fresh = load_credentials_file(path)
    if not fresh:
        raise CredentialsFileError(f"credentials file {path} holds no key")
    return fresh


@dataclass(frozen=True)
class _Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: str
    signature: str


def _parse_authorization(value: str) -> _Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != _ALGORITHM:
        raise ServiceError(
            "IncompleteSignatureException",
            f"Unsupported Authorization algorithm; this endpoint accepts {_ALGORITHM} only.",
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts[key.strip()] = val.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not parts.get(k)]
    if missing:
        raise ServiceError(
            "IncompleteSignatureException",
            " ".join(f"Authorization header requires '{k}' parameter." for k in missing),
        )
    scope = parts["Credential"].split("/")
    if len(scope) != 5:
        raise ServiceError(
            "IncompleteSignatureException",
            "Credential must have exactly 5 slash-delimited elements, e.g. "
            "keyid/date/region/service/term.",
        )
    key, date, region, service, terminator = scope
    return _Authorization(
        key, date, region, service, terminator, parts["SignedHeaders"], parts["Signature"]
    )


class _ExactHeadersSigV4(SigV4Auth):  # type: ignore[misc,unused-ignore]
    """botocore's signer, canonicalising exactly the headers it is given.

    botocore never signs a few headers (``user-agent``, ``expect``...) and drops them from the
    canonical request; other SDKs may sign them.  The verifier already reduced the request to the
    headers the client listed as signed, so every one of them is canonicalised here.
    """

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name, value in request.headers.items():
            header_map[name.lower()] = value
        return header_map


def _amz(ts: datetime) -> str:
    return ts.strftime(_AMZ_DATE)


class SigV4Verifier:
    """Check that a request was signed by one of ``credentials`` for ``region``/``sagemaker``."""

    def __init__(
        self,
        credentials: Mapping[str, Credential],
        region: str,
        clock: Callable[[], float],
        service: str = SIGNING_NAME,
        max_skew: float = MAX_SKEW_SECONDS,
    ) -> None:
        self._credentials = dict(credentials)  # replaced whole, never changed in place
        self._region = region
        self._service = service
        self._clock = clock
        self._max_skew = max_skew

    @property
    def key_count(self) -> int:
        return len(self._credentials)

    def replace_credentials(self, credentials: Mapping[str, Credential]) -> None:
        """Verify with these keys from now on (one reference swap: a request in flight sees
        either the old keys or the new ones, never a mix)."""
        self._credentials = dict(credentials)

    def verify(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> Credential:
        """Return the credential that signed the request, or raise ``ServiceError``.

        ``target`` is the request target as received (path and query, percent-encoded);
        ``headers`` the received header pairs in order, repeats included.
        """
        pairs = list(headers)
        by_name: dict[str, list[str]] = {}
        for name, value in pairs:
            by_name.setdefault(name.lower(), []).append(value)

        auth_values = by_name.get("authorization")
        if not auth_values:
            raise ServiceError(
                "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        if len(auth_values) > 1:
            raise ServiceError(
                "IncompleteSignatureException", "More than one Authorization header."
            )
        auth = _parse_authorization(auth_values[0])

        signed = auth.signed_headers.split(";")
        if "host" not in signed:
            raise ServiceError(
                "IncompleteSignatureException",
                "'Host' must be a 'SignedHeader' in the AWS Authorization.",
            )
        timestamp = self._request_time(by_name)

        cred = self._credentials.get(auth.access_key_id)
        if cred is None:
            raise ServiceError("UnrecognizedClientException", _BAD_TOKEN)

        if auth.terminator != "aws4_request":
            raise ServiceError(
                "InvalidSignatureException",
                "Credential should be scoped with a valid terminator: 'aws4_request'.",
            )
        if auth.service != self._service:
            raise ServiceError(
                "InvalidSignatureException",
                f"Credential should be scoped to correct service: '{self._service}'.",
            )
        if auth.region != self._region:
            raise ServiceError(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region: '{self._region}'.",
            )
        if auth.date != _amz(timestamp)[:8]:
            raise ServiceError(
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                "from HTTP.",
            )
        self._check_skew(timestamp)
        self._check_token(cred, by_name.get("x-amz-security-token"))

        payload_hash = hashlib.sha256(body).hexdigest()
        declared = by_name.get("x-amz-content-sha256")
        if declared is not None and (len(declared) != 1 or declared[0].strip() != payload_hash):
            raise ServiceError(
                "InvalidSignatureException",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )

        expected = self._expected_signature(cred, target, pairs, signed, body, timestamp, method)
        given = auth.signature.encode("latin-1", "replace")
        if expected is None or not hmac.compare_digest(expected.encode("ascii"), given):
            raise ServiceError("InvalidSignatureException", _MISMATCH)
        return cred

    def _request_time(self, by_name: Mapping[str, list[str]]) -> datetime:
        amz = by_name.get("x-amz-date")
        if amz:
            try:
                if _AMZ_DATE_RE.fullmatch(amz[0].strip()) is None:
                    raise ValueError("not YYYYMMDDTHHMMSSZ")
                return datetime.strptime(amz[0].strip(), _AMZ_DATE).replace(tzinfo=timezone.utc)
            except ValueError:
                raise ServiceError(
                    "IncompleteSignatureException",
                    "X-Amz-Date must be in ISO-8601 basic format, e.g. 20240101T000000Z.",
                ) from None
        date = by_name.get("date")
        if date:
            try:
                parsed = parsedate_to_datetime(date[0])
                if parsed.tzinfo is None:
                    raise ValueError("no time zone")
                return parsed.astimezone(timezone.utc)
            except (TypeError, ValueError, IndexError, OverflowError):
                raise ServiceError(
                    "IncompleteSignatureException", "Date must be an RFC 7231 HTTP date in GMT."
                ) from None
        raise ServiceError(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )

    def _check_skew(self, timestamp: datetime) -> None:
        now = datetime.fromtimestamp(self._clock(), tz=timezone.utc).replace(microsecond=0)
        window = timedelta(seconds=self._max_skew)
        minutes = f"{self._max_skew / 60:g} min."
        if timestamp < now - window:
            raise ServiceError(
                "InvalidSignatureException",
                f"Signature expired: {_amz(timestamp)} is now earlier than "
                f"{_amz(now - window)} ({_amz(now)} - {minutes})",
            )
        if timestamp > now + window:
            raise ServiceError(
                "InvalidSignatureException",
                f"Signature not yet current: {_amz(timestamp)} is still later than "
                f"{_amz(now + window)} ({_amz(now)} + {minutes})",
            )

    @staticmethod
    def _check_token(cred: Credential, given: list[str] | None) -> None:
        if cred.session_token is None:
            if given:
                raise ServiceError("UnrecognizedClientException", _BAD_TOKEN)
            return
        if not given or len(given) != 1:
            raise ServiceError("UnrecognizedClientException", _BAD_TOKEN)
        if not hmac.compare_digest(
            given[0].strip().encode("latin-1", "replace"), cred.session_token.encode("utf-8")
        ):
            raise ServiceError("UnrecognizedClientException", _BAD_TOKEN)

    def _expected_signature(
        self,
        cred: Credential,
        target: str,
        pairs: list[tuple[str, str]],
        signed: list[str],
        body: bytes,
        timestamp: datetime,
        method: str,
    ) -> str | None:
        """botocore's signature over the headers the client says it signed; None if unsignable."""
        wanted = set(signed)
        request = AWSRequest(method=method, url="http://sigv4.invalid" + target, data=body)
        present: set[str] = set()
        for name, value in pairs:
            lname = name.lower()
            if lname in wanted:
                request.headers[lname] = value  # HTTPHeaders appends: repeats are kept in order
                present.add(lname)
        if present != wanted:
            return None  # a header listed as signed is missing from the request
        request.context["timestamp"] = _amz(timestamp)
        signer = _ExactHeadersSigV4(
            Credentials(cred.access_key_id, cred.secret_access_key, cred.session_token),
            self._service,
            self._region,
        )
        headers_to_sign = signer.headers_to_sign(request)
        if signer.signed_headers(headers_to_sign) != ";".join(signed):
            return None  # unsorted, upper-case or repeated names: not a canonical SignedHeaders
        canonical = signer.canonical_request(request)
        return str(signer.signature(signer.string_to_sign(request, canonical), request))
