"""The HTTP endpoint: Edge Manager's data plane over stdlib ``ThreadingHTTPServer``.

One request, in order (the first failure answers; see ``docs/endpoint.md`` for the codes):

1. route ``POST /<Operation>`` from botocore's model          -> 404 UnknownOperationException
2. framing: ``Content-Length`` required, at most ``max_body``  -> 411 / 413 / 400
3. SigV4 (``sigv4.SigV4Verifier``, botocore's signer)          -> 403 / 400
4. throttling per access key (optional token bucket)          -> 429 ThrottlingException
5. JSON object body (no NaN/Infinity)                          -> 400 SerializationException
6. model validation of the input                              -> 400 ValidationException
7. key scope (``fleets``) and device registry                 -> 403 AccessDenied / 400 Validation
8. the operation; SendHeartbeat commits before 200            -> 500 InternalServiceException

``GET /fleet`` and ``/fleet/...`` (the read-only fleet page and its JSON, ``web.FleetPage``) are
answered before step 1 when the page is on; its access rule is its own (loopback clients, or HTTP
Basic viewer credentials), never SigV4.

Every answer has a ``Date`` header from the server clock (devices without an RTC set their clock
from it) and an ``x-amzn-RequestId``; error answers carry ``x-amzn-ErrorType`` and
``{"message": ...}``.  A request never takes the process down and never gets a 5xx for what it
contains; the only 5xx are faults (500, logged with a traceback) and overload (503).
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..heartbeat import HeartbeatValidationError, validate_input
from ..heartbeat.service import operations
from .errors import ServiceError
from .fleet.queries import DEFAULT_OFFLINE_AFTER
from .fleet.web import FleetPage
from .sigv4 import Credential, SigV4Verifier, normalize_credentials
from .store import DeviceRefused, FleetStore, open_store

__all__ = ["DEFAULT_CACHE_TTL", "DEFAULT_MAX_BODY", "EndpointServer"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_CACHE_TTL = 3600
_VERSION = "edgetelemetry-endpoint/1"
_LENGTH_RE = re.compile(r"[0-9]{1,15}")
_DRAIN_FACTOR = 4  # a body up to 4x the limit is read and dropped before the 413


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
    try:  # "\\ud800" is valid JSON but not Unicode: refuse it here, not in SQLite
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ServiceError(
            "SerializationException", "Body contains an unpaired UTF-16 surrogate escape."
        ) from None
    return value


class _TokenBucket:
    """``rate`` requests per second per key, ``burst`` at once."""

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


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that caps concurrent connections and can drop idle ones on stop."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], endpoint: EndpointServer) -> None:
        self.endpoint = endpoint
        self._slots = threading.BoundedSemaphore(endpoint.max_connections)
        self._active: dict[socket.socket, threading.Thread] = {}
        self._active_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        thread = threading.Thread(
            target=self._run,
            args=(request, client_address),
            daemon=True,
            name=f"edgetelemetry-endpoint-{client_address[1] if client_address else '?'}",
        )
        with self._active_lock:
            self._active[request] = thread
        thread.start()

    def _run(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active.pop(request, None)
            self._slots.release()

    def _refuse_busy(self, request: socket.socket) -> None:
        body = json.dumps({"message": "Too many open connections; retry later."}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            f"Date: {formatdate(self.endpoint.clock(), usegmt=True)}\r\n"
            "x-amzn-ErrorType: ServiceUnavailable\r\n"
            f"x-amzn-RequestId: {uuid.uuid4()}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            request.settimeout(1.0)
            request.sendall(head.encode("latin-1") + body)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Called from socketserver's except block: connection-level failures (client gone,
        # timeouts) that are not the server's fault.
        logger.debug("connection from %s ended: %s", client_address, sys.exc_info()[1])

    def drop_connections(self, timeout: float) -> None:
        """Stop reading on every open connection (idle keep-alives end) and wait for handlers."""
        with self._active_lock:
            active = list(self._active.items())
        for sock, _ in active:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for _, thread in active:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    _request_id = ""
    protocol_version = "HTTP/1.1"
    server_version = _VERSION
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.endpoint.request_timeout  # type: ignore[misc]
        super().setup()

    # -- stdlib hooks ------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # http.server answers an unknown method with 501; every method is ours to answer.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def version_string(self) -> str:
        return _VERSION

    def date_time_string(self, timestamp: float | None = None) -> str:
        clock = self.server.endpoint.clock
        return str(formatdate(clock() if timestamp is None else timestamp, usegmt=True))

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP caught by http.server itself: answer AWS-style, then close."""
        status = code if 400 <= code < 500 else 400
        self.close_connection = True
        self._request_id = str(uuid.uuid4())
        self._answer(
            status,
            {"message": message or "Malformed HTTP request."},
            error_type="SerializationException",
        )

    # -- the request -------------------------------------------------------------------------

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        endpoint = self.server.endpoint
        self._request_id = str(uuid.uuid4())
        if endpoint.fleet_page is not None and FleetPage.handles(self.path):
            self._serve_fleet_page(endpoint.fleet_page)
            return
        op_name = "-"
        try:
            op_name = self._route()
            body = self._read_body()
            cred = endpoint.verifier.verify(self.command, self.path, self.headers.items(), body)
            if endpoint.throttle is not None and not endpoint.throttle.take(cred.access_key_id):
                raise ServiceError("ThrottlingException", "Rate exceeded")
            params = _decode_json(body)
            try:
                validate_input(op_name, params)
            except HeartbeatValidationError as exc:
                raise ServiceError(
                    "ValidationException", f"1 validation error detected: {exc}"
                ) from None
            result = endpoint.dispatch(op_name, params, cred)
        except ServiceError as err:
            logger.debug("%s %s -> %s %s", self._request_id, op_name, err.status, err.code)
            self._answer(err.status, {"message": err.message}, error_type=err.code)
            return
        except Exception:  # a fault of ours: logged with its traceback, answered as AWS does
            logger.exception("%s %s failed", self._request_id, op_name)
            self.close_connection = True
            self._answer(
                500,
                {"message": "An internal error occurred; retry the request."},
                error_type="InternalServiceException",
            )
            return
        logger.debug("%s %s -> 200", self._request_id, op_name)
        self._answer(200, result)

    def _serve_fleet_page(self, page: FleetPage) -> None:
        length = (self.headers.get("Content-Length") or "0").strip()
        if length != "0" or self.headers.get_all("Transfer-Encoding"):
            self.close_connection = True  # a body the page does not read
        try:
            answer = page.respond(self.command, self.path, self.headers, self.client_address[0])
        except Exception:
            logger.exception("%s fleet page %s failed", self._request_id, self.path[:100])
            self.close_connection = True
            self._answer(
                500,
                {"message": "An internal error occurred."},
                error_type="InternalServiceException",
            )
            return
        self._send(answer.status, answer.content_type, answer.body, answer.headers)

    def _route(self) -> str:
        path = self.path.split("?", 1)[0]
        op = operations().get(path) if path.startswith("/") else None
        if op is None or self.command != "POST":
            self.close_connection = True  # the body (if any) is not read
            shown = self.path[:100]
            raise ServiceError(
                "UnknownOperationException",
                f"No operation at {self.command} {shown}; this endpoint serves POST "
                + ", POST ".join(sorted(operations())),
            )
        return str(op.name)

    def _read_body(self) -> bytes:
        endpoint = self.server.endpoint
        if self.headers.get_all("Transfer-Encoding"):
            self.close_connection = True
            raise ServiceError(
                "LengthRequiredException",
                "Transfer-Encoding is not supported; send the body with a Content-Length.",
            )
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self.close_connection = True
            raise ServiceError("LengthRequiredException", "Content-Length is required.")
        if len({v.strip() for v in lengths}) != 1 or not _LENGTH_RE.fullmatch(lengths[0].strip()):
            self.close_connection = True
            raise ServiceError("SerializationException", "Content-Length is not a valid length.")
        length = int(lengths[0].strip())
        if length > endpoint.max_body:
            self.close_connection = True
            if length <= _DRAIN_FACTOR * endpoint.max_body:
                # read and drop it, so the client is not reset before it reads the answer
                self._discard(length)
            raise ServiceError(
                "RequestEntityTooLargeException",
                f"Request body is {length} bytes; the limit is {endpoint.max_body}.",
            )
        try:
            body = self.rfile.read(length)
        except OSError:  # timeout or reset while reading
            body = b""
        if len(body) != length:
            self.close_connection = True
            raise ServiceError(
                "SerializationException",
                f"Request body ended after {len(body)} of {length} bytes (Content-Length).",
            )
        return body

    def _discard(self, length: int) -> None:
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 65536))
                if not chunk:
                    return
                length -= len(chunk)
        except OSError:
            return

    def _answer(self, status: int, payload: Mapping[str, Any] | None, error_type: str = "") -> None:
        data = json.dumps(payload).encode("utf-8") if payload else b""
        headers = (("x-amzn-ErrorType", error_type),) if error_type else ()
        self._send(status, "application/json", data, headers)

    def _send(
        self, status: int, content_type: str, body: bytes, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            # unparseable request line (or real HTTP/0.9): answer with headers all the same
            self.request_version = "HTTP/1.0"
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", self._request_id)
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class EndpointServer:
    """A self-hosted Edge Manager data-plane endpoint (``SendHeartbeat``, ``GetDeviceRegistration``,
    ``GetDeployments``) that verifies SigV4 and stores everything in SQLite.

    ::

        with EndpointServer("fleet.sqlite3", credentials={"AKID...": "secret"}) as server:
            server.store.register_fleet("line-1")
            server.store.register_devices("line-1", ["cam-1"])
            boto3.client("sagemaker-edge", endpoint_url=server.url, ...)

    ``store_path=None`` keeps the store in memory.  ``credentials`` maps access key ids to a secret
    or to ``{"secret_access_key", "session_token"?, "fleets"?}`` (see ``sigv4.Credential``).
    ``auto_register`` registers unknown devices (and fleets) on first contact: for demos and
    development, not for fleets.  ``rate_limit`` (requests/s per access key, burst ``burst``)
    turns on throttling.  ``clock`` is the server's time: signature skew, ``Date``, receive times.

    ``fleet_page`` serves the read-only fleet page at ``GET /fleet`` (``web.FleetPage``): to
    loopback clients only, or, with ``fleet_viewers`` (``{user: password}``), to any client with
    those HTTP Basic credentials.  ``offline_after`` is its default recency window (seconds).
    """

    def __init__(
        self,
        store_path: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: Mapping[str, str | Mapping[str, Any] | Credential] | None = None,
        region: str = "us-east-1",
        clock: Callable[[], float] = time.time,
        *,
        auto_register: bool = False,
        cache_ttl: int = DEFAULT_CACHE_TTL,
        max_body: int = DEFAULT_MAX_BODY,
        rate_limit: float | None = None,
        burst: int = 20,
        max_connections: int = 128,
        request_timeout: float = 20.0,
        store: FleetStore | None = None,
        fleet_page: bool = True,
        fleet_viewers: Mapping[str, str] | None = None,
        offline_after: float = DEFAULT_OFFLINE_AFTER,
    ) -> None:
        if not credentials:
            raise ValueError("an endpoint needs at least one credential (access key -> secret)")
        if not 1 <= cache_ttl < 10**9:
            raise ValueError("cache_ttl must be 1..999999999 seconds")
        if max_body < 1 or max_connections < 1 or request_timeout <= 0:
            raise ValueError("max_body, max_connections and request_timeout must be positive")
        self.host = host
        self.region = region
        self.clock = clock
        self.auto_register = auto_register
        self.cache_ttl = cache_ttl
        self.max_body = max_body
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._requested_port = port
        self._credentials = normalize_credentials(credentials)
        self.verifier = SigV4Verifier(self._credentials, region, clock)
        self.throttle = _TokenBucket(rate_limit, burst, time.monotonic) if rate_limit else None
        self._owns_store = store is None
        self.store: FleetStore = (
            store if store is not None else open_store(store_path, clock=clock)
        )
        try:
            self.fleet_page = (
                FleetPage(self.store, clock, viewers=fleet_viewers, offline_after=offline_after)
                if fleet_page
                else None
            )
        except ValueError:
            if self._owns_store:
                self.store.close()
            raise
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> str:
        """Bind, serve on a background thread, and return the URL (``http://host:port``)."""
        if self._httpd is not None:
            raise RuntimeError("server is already started")
        server_class = _Server6 if ":" in self.host else _Server
        self._httpd = server_class((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="edgetelemetry-endpoint",
            daemon=True,
        )
        self._thread.start()
        logger.info(
            "edgetelemetry endpoint on %s (region %s, store %s, %d access key(s))",
            self.url,
            self.region,
            self.store.path or ":memory:",
            len(self._credentials),
        )
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end open connections, wait for in-flight requests, close the store."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            httpd.drop_connections(timeout)
            if self._thread is not None:
                self._thread.join(timeout)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> EndpointServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
