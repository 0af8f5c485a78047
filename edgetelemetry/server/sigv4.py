"""Server-side AWS Signature Version 4 verification.

The expected signature is computed here, from the SigV4 specification, over exactly the headers
the client lists as signed (``user-agent`` too: botocore never signs it, other SDKs may):
canonical request, string to sign, HMAC-SHA256 with a signing key derived once per secret and
day.  It yields what botocore's ``SigV4Auth`` (the agent's signer) computes for every request
botocore can sign, including its choices where the specification leaves room: paths normalised
(dot segments removed, empty segments dropped) then percent-encoded again, the query string
sorted but not re-encoded, repeated headers joined with ``,`` in arrival order.
``tests/test_sigv4_differential.py`` holds it to botocore's signer.  Building botocore's request
and signer objects for each request instead cost 0.1-0.15 ms of CPU per heartbeat.

Also checked here: the ``Authorization`` header, the credential scope, the clock skew (15 minutes,
as AWS), the session token and the payload hash, each with AWS's error code.  Signatures are
compared in constant time.

Secrets, derived keys and session tokens never appear in a message, a log record or a ``repr``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

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
_SCOPE_TERMINATOR = "aws4_request"
_CONTENT_SHA256 = "x-amz-content-sha256"

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


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    for field_name, text in (("secret_access_key", secret), ("session_token", token)):
        if text is not None and not _encodable(text):
            # refused here: each request would raise, and UnicodeEncodeError quotes a character
            raise CredentialsFileError(
                f"{where}: entry {key!r}: {field_name} holds a lone surrogate (a \\uD800-"
                "\\uDFFF escape), which no signer can encode as UTF-8"
            )
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


def _split_target(target: str) -> tuple[str, str] | None:
    """The path and query botocore's signer sees in ``http://host`` + ``target``; None when
    ``urlsplit`` refuses that URL (no signer could have signed it).  An origin-form target
    without the tabs and newlines urlsplit deletes is split here, at a fraction of its cost."""
    if target.startswith("/") and "\t" not in target and "\r" not in target and "\n" not in target:
        path, _, query = target.partition("#")[0].partition("?")
        return path, query
    try:  # not origin-form (or holding tabs/newlines): let urlsplit decide, as the client did
        parts = urlsplit("http://sigv4.invalid" + target)
    except ValueError:
        return None
    return parts.path, parts.query


def _normalized_path(path: str) -> str:
    """RFC 3986 dot-segment removal, plus what AWS (and botocore for every service but S3) adds:
    empty segments are dropped, and a trailing ``/`` survives only if a segment is left."""
    if not path:
        return "/"
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment not in ("", "."):
            kept.append(segment)
    leading = "/" if path[0] == "/" else ""
    trailing = "/" if path[-1] == "/" and kept else ""
    return leading + "/".join(kept) + trailing


@functools.lru_cache(maxsize=256)
def _canonical_uri(path: str) -> str:
    """The normalised path percent-encoded once more (the target arrives encoded already: SigV4
    for services other than S3 encodes twice).  Cached: an endpoint serves a handful of paths.
    Raises ``UnicodeEncodeError`` for a path holding lone surrogates."""
    return quote(_normalized_path(path), safe="/~")


def _canonical_query(query: str) -> str:
    """Pairs sorted by name then value, each kept as sent: botocore signs the query of a URL
    without re-encoding it (a pair with no ``=`` counts as an empty value)."""
    if not query:
        return ""
    pairs = sorted(item.partition("=")[::2] for item in query.split("&"))
    return "&".join(f"{name}={value}" for name, value in pairs)


def _canonical_request(
    method: str,
    target: str,
    headers_by_name: Mapping[str, list[str]],
    signed_headers: str,
    payload_hash: str,
) -> str | None:
    """The SigV4 canonical request over the headers named in ``signed_headers`` (the
    ``SignedHeaders`` value as received), or None when no signer could have produced that list
    from these headers: a listed header is absent, or the list is not sorted, lower-case and
    free of repeats.

    ``headers_by_name``: the received values under each lower-case name, repeats in arrival
    order.  ``payload_hash`` is the hex SHA-256 of the body; a signed ``x-amz-content-sha256``
    header takes its place, as it does for the signer.
    """
    wanted = set(signed_headers.split(";"))
    if not wanted.issubset(headers_by_name):
        return None
    if ";".join(sorted(name.strip() for name in wanted)) != signed_headers:
        return None
    split = _split_target(target)
    if split is None:
        return None
    path, query = split
    try:
        canonical_uri = _canonical_uri(path)
    except UnicodeEncodeError:
        return None
    # str.split() folds every run of whitespace to one space and trims both ends
    header_lines = "".join(
        f"{name}:{','.join(' '.join(v.split()) for v in headers_by_name[name])}\n"
        for name in sorted(wanted)
    )
    return "\n".join((
        method.upper(),
        canonical_uri,
        _canonical_query(query),
        header_lines,
        signed_headers,
        headers_by_name[_CONTENT_SHA256][0] if _CONTENT_SHA256 in wanted else payload_hash,
    ))


def _derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode("utf-8")
    for scope_part in (date, region, service, _SCOPE_TERMINATOR):
        key = hmac.digest(key, scope_part.encode("utf-8"), "sha256")
    return key


class _SigningKeys:
    """Signing keys by (secret, date) for one region and service: the four-HMAC derivation runs
    once a day per credential instead of once per request.

    Bounded: past ``limit`` keys the oldest is dropped (a credential needs at most two dates at
    once, around midnight UTC).  Filled only for a configured credential and a date within the
    allowed skew.  Never printed: its ``repr`` shows a count.
    """

    __slots__ = ("_region", "_service", "_limit", "_keys", "_lock")

    def __init__(self, region: str, service: str, limit: int) -> None:
        self._region = region
        self._service = service
        self._limit = limit
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()  # taken on a miss only; a hit is one dict read

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<signing keys: {len(self._keys)} of at most {self._limit}>"

    def key(self, secret: str, date: str) -> bytes:
        found = self._keys.get((secret, date))
        if found is not None:
            return found
        derived = _derive_signing_key(secret, date, self._region, self._service)
        with self._lock:
            while len(self._keys) >= self._limit:
                del self._keys[next(iter(self._keys))]  # insertion order: the oldest first
            self._keys[(secret, date)] = derived
        return derived


@dataclass(frozen=True)
class _Keyring:
    """The accepted credentials and the keys derived from them, replaced together (so a reload
    drops every key derived from a secret it removes)."""

    credentials: dict[str, Credential]
    signing_keys: _SigningKeys


def _parse_amz_date(text: str) -> datetime:
    """``text`` (matched by ``_AMZ_DATE_RE``) as a UTC time; ``ValueError`` for an impossible
    date or time.  What ``strptime(text, _AMZ_DATE)`` gives - fixed-width digit fields can only
    be read one way - at a fifth of its cost."""
    return datetime(
        int(text[0:4]), int(text[4:6]), int(text[6:8]),
        int(text[9:11]), int(text[11:13]), int(text[13:15]),
        tzinfo=timezone.utc,
    )


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
        self._region = region
        self._service = service
        self._clock = clock
        self._max_skew = max_skew
        self._skew_window = timedelta(seconds=max_skew)
        self._keyring = self._new_keyring(credentials)  # replaced whole, never changed in place

    def _new_keyring(self, credentials: Mapping[str, Credential]) -> _Keyring:
        keys = dict(credentials)
        return _Keyring(keys, _SigningKeys(self._region, self._service, max(16, 2 * len(keys))))

    @property
    def key_count(self) -> int:
        return len(self._keyring.credentials)

    def replace_credentials(self, credentials: Mapping[str, Credential]) -> None:
        """Verify with these keys from now on (one reference swap: a request in flight sees
        either the old keys or the new ones, never a mix).  Keys derived from the old secrets
        go with them."""
        self._keyring = self._new_keyring(credentials)

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
        stamp = _amz(timestamp)

        keyring = self._keyring  # read once: a reload during this request changes nothing here
        cred = keyring.credentials.get(auth.access_key_id)
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
        if auth.date != stamp[:8]:
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

        canonical = _canonical_request(method, target, by_name, auth.signed_headers, payload_hash)
        expected = (
            None if canonical is None else self._signature(keyring, cred, canonical, stamp)
        )
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
                return _parse_amz_date(amz[0].strip())
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
        window = self._skew_window
        if timestamp < now - window:
            raise ServiceError(
                "InvalidSignatureException",
                f"Signature expired: {_amz(timestamp)} is now earlier than "
                f"{_amz(now - window)} ({_amz(now)} - {self._max_skew / 60:g} min.)",
            )
        if timestamp > now + window:
            raise ServiceError(
                "InvalidSignatureException",
                f"Signature not yet current: {_amz(timestamp)} is still later than "
                f"{_amz(now + window)} ({_amz(now)} + {self._max_skew / 60:g} min.)",
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

    def _signature(
        self, keyring: _Keyring, cred: Credential, canonical_request: str, stamp: str
    ) -> str | None:
        """The hex signature of ``canonical_request`` at ``stamp`` (``YYYYMMDDTHHMMSSZ``) with
        ``cred``'s secret; None when the request holds text no signer can encode (lone
        surrogates)."""
        try:
            request_digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
        except UnicodeEncodeError:
            return None
        date = stamp[:8]
        string_to_sign = (
            f"{_ALGORITHM}\n{stamp}\n{date}/{self._region}/{self._service}/{_SCOPE_TERMINATOR}\n"
            f"{request_digest}"
        )
        signing_key = keyring.signing_keys.key(cred.secret_access_key, date)
        return hmac.digest(signing_key, string_to_sign.encode("utf-8"), "sha256").hex()
