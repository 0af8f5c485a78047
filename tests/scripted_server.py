"""A scripted HTTP server for client tests: real sockets on 127.0.0.1, answers chosen per request.

Tests queue ``Action``s; each request that arrives takes the next one (or ``default`` when the
queue is empty) and is recorded, so a test asserts what the client really sent::

    with ScriptedServer() as srv:
        srv.script(Action.throttle(), Action.ok())
        ...  # point boto3 at srv.url
        assert [r.path for r in srv.requests] == ["/SendHeartbeat"] * 2

Actions cover what an AWS JSON endpoint and the network between do to a client: successes,
AWS-style errors (``x-amzn-ErrorType`` + ``{"message": ...}``), an answer slower than the client's
read timeout, a TCP reset, a close without an answer, and answers whose ``Date`` header comes from
a clock far from the client's.  Not a conftest.py: import what you need from here.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Action", "RecordedRequest", "ScriptedServer", "amz_date_epoch", "running"]


@dataclass(frozen=True)
class Action:
    """What the server does with one request.

    ``kind``: ``"answer"`` (status, headers, body), ``"reset"`` (RST without answering),
    ``"close"`` (FIN without answering).  ``delay_s`` waits before acting (for read timeouts).
    ``date``: epoch seconds for the ``Date`` header (default: the server's clock); ``None``
    with ``no_date=True`` omits the header.
    """

    kind: str = "answer"
    status: int = 200
    body: bytes = b"{}"
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    date: float | None = None
    no_date: bool = False

    # -- successes ----------------------------------------------------------------------------

    @classmethod
    def ok(cls, body: Mapping[str, Any] | None = None, **kw: Any) -> Action:
        return cls(status=200, body=json.dumps(dict(body or {})).encode(), **kw)

    # -- AWS-style errors ---------------------------------------------------------------------

    @classmethod
    def error(
        cls,
        code: str,
        status: int,
        message: str = "",
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> Action:
        hdrs = (("x-amzn-ErrorType", code),) + tuple((headers or {}).items())
        body = json.dumps({"message": message or code}).encode()
        return cls(status=status, body=body, headers=hdrs, **kw)

    @classmethod
    def throttle(cls, retry_after: str | None = None, **kw: Any) -> Action:
        extra = {"Retry-After": retry_after} if retry_after is not None else None
        return cls.error("ThrottlingException", 400, "Rate exceeded", extra, **kw)

    @classmethod
    def internal_service(cls, **kw: Any) -> Action:
        return cls.error("InternalServiceException", 500, "An internal error occurred.", **kw)

    @classmethod
    def internal_failure(cls, **kw: Any) -> Action:
        return cls.error("InternalFailure", 500, "We encountered an internal error.", **kw)

    @classmethod
    def unavailable(cls, **kw: Any) -> Action:
        return cls.error("ServiceUnavailable", 503, "Service unavailable, retry later.", **kw)

    @classmethod
    def validation(cls, message: str = "1 validation error detected", **kw: Any) -> Action:
        return cls.error("ValidationException", 400, message, **kw)

    @classmethod
    def expired_token(cls, **kw: Any) -> Action:
        return cls.error("ExpiredTokenException", 403, "The security token included in the "
                         "request is expired", **kw)

    @classmethod
    def access_denied(cls, **kw: Any) -> Action:
        return cls.error("AccessDeniedException", 403, "User is not authorized", **kw)

    @classmethod
    def unrecognized_client(cls, **kw: Any) -> Action:
        return cls.error("UnrecognizedClientException", 403, "The security token included in "
                         "the request is invalid.", **kw)

    @classmethod
    def signature_expired(cls, server_time: float, *, in_message: bool = True,
                          no_date: bool = False) -> Action:
        """AWS's answer to a request signed >15 min before ``server_time``, ``Date`` included."""
        now = _amz(server_time)
        floor = _amz(server_time - 900)
        msg = (f"Signature expired: 20000101T000000Z is now earlier than {floor} "
               f"({now} - 15 min.)") if in_message else "Signature expired"
        return cls.error("InvalidSignatureException", 403, msg, date=server_time,
                         no_date=no_date)

    # -- the network --------------------------------------------------------------------------

    @classmethod
    def slow(cls, delay_s: float, then: Action | None = None) -> Action:
        base = then or cls.ok()
        return Action(base.kind, base.status, base.body, base.headers, delay_s, base.date,
                      base.no_date)

    @classmethod
    def reset(cls) -> Action:
        return cls(kind="reset")

    @classmethod
    def close(cls) -> Action:
        return cls(kind="close")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float
    action: Action = field(repr=False, default_factory=Action)

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def amz_date(self) -> str | None:
        return self.headers.get("x-amz-date")

    @property
    def access_key_id(self) -> str | None:
        auth = self.headers.get("authorization", "")
        marker = "Credential="
        if marker not in auth:
            return None
        return auth.split(marker, 1)[1].split("/", 1)[0]


def amz_date_epoch(value: str) -> float:
    """``20240101T000000Z`` -> epoch seconds."""
    return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()


def _amz(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as AWS endpoints do: exercises pooled reuse
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle holds the body until
        # the client's delayed ACK (40 ms on Linux) and every request takes that long.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner = self.server.owner
        action = owner._next_action()
        owner._record(RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.time(),
            action=action,
        ))
        if action.delay_s and owner._stopping.wait(action.delay_s):
            return
        if action.kind == "reset":
            # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if action.kind == "close":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.send_response_only(action.status)
        if not action.no_date:
            when = action.date if action.date is not None else owner.clock()
            self.send_header("Date", formatdate(when, usegmt=True))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(action.body)))
        self.send_header("x-amzn-RequestId", f"req-{len(owner.requests)}")
        for name, value in action.headers:
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(action.body)
        except OSError:
            self.close_connection = True  # the client gave up (read timeout) meanwhile

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # tests read ``requests``; no stderr noise


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ScriptedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and client-side timeouts make broken pipes here by design


class ScriptedServer:
    """``start()``/``stop()`` (or ``with``); ``url``; ``script(*actions)``; ``requests``.

    ``ssl_context`` (server side) makes it an HTTPS server; with ``CERT_REQUIRED`` it demands
    client certificates, as the AWS IoT credentials provider does.
    """

    def __init__(self, default: Action | None = None, clock: Callable[[], float] = time.time,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.default = default or Action.ok()
        self.clock = clock
        self.ssl_context = ssl_context  # serve HTTPS (set verify_mode for mutual TLS)
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Action] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def script(self, *actions: Action) -> None:
        with self._lock:
            self._queue.extend(actions)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next_action(self) -> Action:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> str:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        if self.ssl_context is not None:
            # The handshake runs in accept(); a failed one (no or untrusted client
            # certificate) is an OSError there, which socketserver drops: nothing recorded.
            self._httpd.socket = self.ssl_context.wrap_socket(self._httpd.socket,
                                                              server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(*actions: Action, default: Action | None = None) -> Iterator[ScriptedServer]:
    """A started server with ``actions`` queued."""
    with ScriptedServer(default) as srv:
        srv.script(*actions)
        yield srv
