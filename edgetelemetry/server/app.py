"""The endpoint as a WSGI application: Edge Manager's data plane, whatever server runs it.

The same ``EndpointApp`` is served by the embedded single-process server (``embedded.py``, the
zero-dependency default: demo, tests, ``serve`` without ``--workers``) and by gunicorn's worker
processes (``workers.py``, ``serve --workers N``).  WSGI rather than ASGI because everything a
request does is synchronous and short (an HMAC, a JSON parse, one store transaction): a thread per
request is the natural unit, and the SigV4, validation and store code stay plain functions.

One request, in order (the first failure answers; see ``docs/endpoint.md`` for the codes):

0. ``GET /healthz`` (process up) and ``GET /readyz`` (store reachable): unauthenticated, no data
1. route ``POST /<Operation>`` from botocore's model          -> 404 UnknownOperationException
2. framing: ``Content-Length`` required, at most ``max_body``  -> 411 / 413 / 400
3. SigV4 (``sigv4.SigV4Verifier``, as botocore's signer signs) -> 403 / 400
4. throttling per access key (optional token bucket)          -> 429 ThrottlingException
5. JSON object body (no NaN/Infinity)                          -> 400 SerializationException
6. model validation of the input                              -> 400 ValidationException
7. key scope (``fleets``) and device registry                 -> 403 AccessDenied / 400 Validation
8. the operation; SendHeartbeat commits before 200            -> 500 InternalServiceException

``GET /fleet`` and ``/fleet/...`` (the read-only fleet page and its JSON, ``web.FleetPage``) are
answered before step 1 when the page is on; its access rule is its own (loopback clients, or HTTP
Basic viewer credentials), never SigV4.  ``GET /metrics`` (``metrics.MetricsRoute``, the
Prometheus text format) is answered the same way, or with a bearer token when one is configured.

Every answer has an ``x-amzn-RequestId`` and (unless the server writes its own) a ``Date`` from
the app's clock; error answers carry ``x-amzn-ErrorType`` and ``{"message": ...}``.  Each refused
request is logged at INFO with its status, code, device and access key id (never a secret or a
signature).  A request never gets a 5xx for what it contains; the only 5xx are faults (500,
logged with a traceback) and a store that cannot be reached (503 from ``/readyz``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..heartbeat import HeartbeatValidationError, validate_input
from ..heartbeat.service import operations
from .alerts import AlertEvaluator
from .errors import ServiceError
from .fleet.queries import DEFAULT_OFFLINE_AFTER
from .fleet.web import FleetPage
from .http_date import http_date
from .metrics import DEFAULT_MAX_SERIES, MetricsRoute
from .sigv4 import Credential, SigV4Verifier, normalize_credentials
from .store import DeviceRefused, FleetStore

__all__ = [
    "DEFAULT_CACHE_TTL",
    "DEFAULT_MAX_BODY",
    "HEADER_PAIRS_KEY",
    "EndpointApp",
    "StartResponse",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_CACHE_TTL = 3600
DRAIN_FACTOR = 4  # a body up to 4x the limit is read and dropped before the 413
# the embedded server puts the request's header pairs here, in order, repeats kept: SigV4 and
# the framing checks then see exactly what was sent (WSGI's HTTP_* keys join repeats)
HEADER_PAIRS_KEY = "edgetelemetry.header_pairs"
_LENGTH_RE = re.compile(r"[0-9]{1,15}")
_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F]")
_CREDENTIAL_RE = re.compile(r"Credential=([A-Za-z0-9_+=,.@-]{1,128})/")
_HEALTH_PATHS = ("/healthz", "/readyz")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
    500: "Internal Server Error", 503: "Service Unavailable",
}


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Status')}"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _decode_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(
            body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise ServiceError(
            "SerializationException", f"Body is not valid JSON: {reason[:200]}"
        ) from None
    if not isinstance(value, dict):
        raise ServiceError("SerializationException", "Body must be a JSON object.")
    # "\\ud800" is valid JSON but not Unicode: refuse it here, not in the store.  Strictly
    # decoded UTF-8 holds no surrogate, so only a \\uD800-\\uDFFF escape can make one: the
    # document is encoded again (a second parse's worth of CPU) only when the body has one
    if _SURROGATE_ESCAPE_RE.search(body) is None:
        return value
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ServiceError(
            "SerializationException", "Body contains an unpaired UTF-16 surrogate escape."
        ) from None
    return value


class _TokenBucket:
    """``rate`` requests per second per key, ``burst`` at once (per process: see docs)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True


class _Headers:
    """Case-insensitive view of header pairs: ``get`` (first value) and ``get_all``."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self._by_name: dict[str, list[str]] = {}
        for name, value in pairs:
            self._by_name.setdefault(name.lower(), []).append(value)

    def get(self, name: str, /) -> str | None:
        values = self._by_name.get(name.lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return self._by_name.get(name.lower(), [])


def _header_pairs(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = environ.get(HEADER_PAIRS_KEY)
    if pairs is not None:
        return list(pairs)
    found = []  # a WSGI server of its own: rebuild the names from the CGI keys
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            found.append((key[5:].replace("_", "-").lower(), str(value)))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value != "":
            found.append((key.replace("_", "-").lower(), str(value)))
    return found


def _target(environ: Mapping[str, Any]) -> str:
    """The request target as the client sent it (path and query, percent-encoded): SigV4 signs
    it, and WSGI's PATH_INFO is already decoded."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = urllib.parse.quote(str(environ.get("PATH_INFO", "")).encode("latin-1"), safe="/-_.~")
    query = environ.get("QUERY_STRING")
    return path + (f"?{query}" if query else "")


class _Request:
    """What the app knows of one request while answering it (for its answer and its log line)."""

    def __init__(self, environ: Mapping[str, Any], clock: Callable[[], float]) -> None:
        self.environ = environ
        self.id = str(uuid.uuid4())
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.target = _target(environ)
        self.path = self.target.split("?", 1)[0]
        self.headers = _Headers(_header_pairs(environ))
        self.operation = "-"
        self.device = "-"
        self.close = False  # ask the server to close the connection after the answer
        self.started = clock()

    @property
    def claimed_key(self) -> str:
        """The access key id the request names (not yet verified: for the log)."""
        match = _CREDENTIAL_RE.search(self.headers.get("Authorization") or "")
        return match.group(1) if match else "-"


class EndpointApp:
    """The endpoint's WSGI application (``app(environ, start_response)``).

    ``store`` is any ``FleetStore``; ``credentials`` maps access key ids to a secret or to
    ``{"secret_access_key", "session_token"?, "fleets"?}``; ``clock`` is the server's time
    (signature skew, ``Date``, receive times).  ``trust_forwarded``: the peer is a reverse proxy
    on this machine, so the client's address is the last ``X-Forwarded-For`` entry (the fleet
    page's loopback rule and the log use it).  ``date_header=False`` when the server writes its
    own ``Date`` (gunicorn does).
    """

    def __init__(
        self,
        store: FleetStore,
        credentials: Mapping[str, str | Mapping[str, Any] | Credential],
        region: str = "us-east-1",
        clock: Callable[[], float] = time.time,
        *,
        auto_register: bool = False,
        cache_ttl: int = DEFAULT_CACHE_TTL,
        max_body: int = DEFAULT_MAX_BODY,
        rate_limit: float | None = None,
        burst: int = 20,
        fleet_page: bool = True,
        fleet_viewers: Mapping[str, str] | None = None,
        offline_after: float = DEFAULT_OFFLINE_AFTER,
        trust_forwarded: bool = False,
        date_header: bool = True,
        metrics: bool = True,
        metrics_token: str | None = None,
        metrics_max_series: int = DEFAULT_MAX_SERIES,
        alerts: AlertEvaluator | None = None,
    ) -> None:
        if not credentials:
            raise ValueError("an endpoint needs at least one credential (access key -> secret)")
        if not 1 <= cache_ttl < 10**9:
            raise ValueError("cache_ttl must be 1..999999999 seconds")
        if max_body < 1:
            raise ValueError("max_body must be positive")
        self.store = store
        self.region = region
        self.clock = clock
        self.auto_register = auto_register
        self.cache_ttl = cache_ttl
        self.max_body = max_body
        self.trust_forwarded = trust_forwarded
        self.date_header = date_header
        self.verifier = SigV4Verifier(normalize_credentials(credentials), region, clock)
        self.throttle = _TokenBucket(rate_limit, burst, time.monotonic) if rate_limit else None
        self.fleet_page = (
            FleetPage(store, clock, viewers=fleet_viewers, offline_after=offline_after)
            if fleet_page
            else None
        )
        self.metrics = (
            MetricsRoute(
                store,
                self.fleet_page,
                clock,
                token=metrics_token,
                offline_after=offline_after,
                max_series=metrics_max_series,
                viewers=fleet_viewers,
            )
            if metrics
            else None
        )
        # the alerts firing (evaluated by the server that owns this app), shown on the page
        self.alerts = alerts
        if alerts is not None and self.fleet_page is not None:
            self.fleet_page.alerts = alerts.firing

    @property
    def key_count(self) -> int:
        return self.verifier.key_count

    def reload_credentials(
        self, credentials: Mapping[str, str | Mapping[str, Any] | Credential]
    ) -> None:
        """Serve with these keys from the next request on (key rotation, SIGHUP)."""
        if not credentials:
            raise ValueError("an endpoint needs at least one credential (access key -> secret)")
        self.verifier.replace_credentials(normalize_credentials(credentials))

    # -- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = _Request(environ, self.clock)
        if request.path in _HEALTH_PATHS:
            request.operation = request.path.strip("/")
            return self._health(request, start_response)
        if self.metrics is not None and MetricsRoute.handles(request.path):
            request.operation = "metrics"
            return self._fleet(request, start_response, self.metrics)
        if self.fleet_page is not None and FleetPage.handles(request.path):
            request.operation = "fleet"
            return self._fleet(request, start_response, self.fleet_page)
        try:
            result = self._operation(request)
        except ServiceError as err:
            logger.info(
                "refused %s %s: %d %s device=%s key=%s peer=%s",
                request.id, request.operation, err.status, err.code, request.device,
                request.claimed_key, self._client_host(request),
            )
            return self._answer(
                request, start_response, err.status, {"message": err.message}, err.code
            )
        except Exception:  # a fault of ours: logged with its traceback, answered as AWS does
            logger.exception("%s %s failed", request.id, request.operation)
            request.close = True
            return self._answer(
                request, start_response, 500,
                {"message": "An internal error occurred; retry the request."},
                "InternalServiceException",
            )
        logger.debug("%s %s -> 200", request.id, request.operation)
        return self._answer(request, start_response, 200, result)

    def _operation(self, request: _Request) -> dict[str, Any]:
        op = operations().get(request.path) if request.path.startswith("/") else None
        if op is None or request.method != "POST":
            request.close = True  # the body (if any) is not read
            raise ServiceError(
                "UnknownOperationException",
                f"No operation at {request.method} {request.target[:100]}; this endpoint serves "
                "POST " + ", POST ".join(sorted(operations())),
            )
        request.operation = str(op.name)
        body = self._read_body(request)
        cred = self.verifier.verify(request.method, request.target, request.headers.pairs, body)
        if self.throttle is not None and not self.throttle.take(cred.access_key_id):
            raise ServiceError("ThrottlingException", "Rate exceeded")
        params = _decode_json(body)
        if isinstance(params.get("DeviceName"), str):
            request.device = params["DeviceName"][:64]
        try:
            validate_input(request.operation, params)
        except HeartbeatValidationError as exc:
            raise ServiceError(
                "ValidationException", f"1 validation error detected: {exc}"
            ) from None
        return self.dispatch(request.operation, params, cred)

    def _read_body(self, request: _Request) -> bytes:
        headers = request.headers
        if headers.get_all("Transfer-Encoding"):
            request.close = True
            raise ServiceError(
                "LengthRequiredException",
                "Transfer-Encoding is not supported; send the body with a Content-Length.",
            )
        lengths = headers.get_all("Content-Length")
        if not lengths:
            request.close = True
            raise ServiceError("LengthRequiredException", "Content-Length is required.")
        if len({v.strip() for v in lengths}) != 1 or not _LENGTH_RE.fullmatch(lengths[0].strip()):
            request.close = True
            raise ServiceError("SerializationException", "Content-Length is not a valid length.")
        length = int(lengths[0].strip())
        stream = request.environ["wsgi.input"]
        if length > self.max_body:
            request.close = True
            if length <= DRAIN_FACTOR * self.max_body:
                # read and drop it, so the client is not reset before it reads the answer
                self._discard(stream, length)
            raise ServiceError(
                "RequestEntityTooLargeException",
                f"Request body is {length} bytes; the limit is {self.max_body}.",
            )
        try:
            body = stream.read(length) if length else b""
        except OSError:  # timeout or reset while reading
            body = b""
        if len(body) != length:
            request.close = True
            raise ServiceError(
                "SerializationException",
                f"Request body ended after {len(body)} of {length} bytes (Content-Length).",
            )
        return bytes(body)

    @staticmethod
    def _discard(stream: Any, length: int) -> None:
        try:
            while length > 0:
                chunk = stream.read(min(length, 65536))
                if not chunk:
                    return
                length -= len(chunk)
        except OSError:
            return

    def _client_host(self, request: _Request) -> str:
        peer = str(request.environ.get("REMOTE_ADDR") or "")
        if self.trust_forwarded:
            forwarded = request.headers.get_all("X-Forwarded-For")
            if forwarded:  # the proxy appends the address it saw: the last entry is its own
                return forwarded[-1].rsplit(",", 1)[-1].strip()
        return peer

    # -- the routes beside the operations ----------------------------------------------------

    def _health(self, request: _Request, start_response: StartResponse) -> Iterable[bytes]:
        if request.method not in ("GET", "HEAD"):
            request.close = True
            return self._answer(request, start_response, 405, {"message": "GET or HEAD only"})
        if request.path == "/healthz":
            return self._answer(request, start_response, 200, {"status": "ok"})
        try:
            self.store.ping()
        except Exception as exc:  # what the store raises when it is gone: its type and message
            logger.warning("readyz: the store is not reachable: %s", type(exc).__name__)
            return self._answer(request, start_response, 503, {"status": "store unreachable"})
        return self._answer(request, start_response, 200, {"status": "ready"})

    def _fleet(
        self, request: _Request, start_response: StartResponse, page: FleetPage | MetricsRoute
    ) -> Iterable[bytes]:
        length = (request.headers.get("Content-Length") or "0").strip()
        if length != "0" or request.headers.get_all("Transfer-Encoding"):
            request.close = True  # a body the page does not read
        try:
            answer = page.respond(
                request.method, request.target, request.headers, self._client_host(request)
            )
        except Exception:
            logger.exception("%s fleet page %s failed", request.id, request.path[:100])
            request.close = True
            return self._answer(
                request, start_response, 500, {"message": "An internal error occurred."},
                "InternalServiceException",
            )
        return self._send(
            request, start_response, answer.status, answer.content_type, answer.body,
            answer.headers,
        )

    # -- answers -----------------------------------------------------------------------------

    def _answer(
        self,
        request: _Request,
        start_response: StartResponse,
        status: int,
        payload: Mapping[str, Any] | None,
        error_type: str = "",
    ) -> Iterable[bytes]:
        data = json.dumps(payload).encode("utf-8") if payload else b""
        headers = (("x-amzn-ErrorType", error_type),) if error_type else ()
        return self._send(request, start_response, status, "application/json", data, headers)

    def _send(
        self,
        request: _Request,
        start_response: StartResponse,
        status: int,
        content_type: str,
        body: bytes,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Iterable[bytes]:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", request.id),
            *extra,
        ]
        if self.date_header:
            headers.append(("Date", http_date(self.clock())))
        if request.close:
            headers.append(("Connection", "close"))
        if self.metrics is not None:
            self.metrics.count(request.operation if request.operation != "-" else "unrouted",
                               status)
        start_response(_status_line(status), headers)
        return [] if request.method == "HEAD" else [body]

    # -- operations --------------------------------------------------------------------------

    def dispatch(
        self, operation: str, params: Mapping[str, Any], cred: Credential
    ) -> dict[str, Any]:
        device = params["DeviceName"]
        fleet = params["DeviceFleetName"]
        if not cred.allows_fleet(fleet):
            raise ServiceError(
                "AccessDeniedException",
                f"Access key {cred.access_key_id} is not authorized to act for device fleet "
                f"'{fleet}'.",
            )
        try:
            if operation == "SendHeartbeat":
                stored = self.store.record_heartbeat(
                    params, access_key_id=cred.access_key_id, auto_register=self.auto_register
                )
                if not stored:  # answered as the first send was: the agent moves on
                    logger.info("SendHeartbeat from %s: a resend, already stored", device)
                return {}
            if operation == "GetDeviceRegistration":
                status = self.store.check_device(device, fleet, auto_register=self.auto_register)
                return {"DeviceRegistration": status, "CacheTTL": str(self.cache_ttl)}
            if operation == "GetDeployments":
                self.store.check_device(
                    device, fleet, auto_register=self.auto_register, allow_deregistered=False
                )
                return {"Deployments": self.store.deployments_for(device, fleet)}
        except DeviceRefused as exc:
            raise ServiceError("ValidationException", str(exc)) from None
        raise ServiceError("UnknownOperationException", f"Operation {operation} is not served.")
