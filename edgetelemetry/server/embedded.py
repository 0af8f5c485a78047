"""The embedded HTTP server: one process, a thread per connection, stdlib only, serving any WSGI
application (the endpoint's ``EndpointApp``).  The zero-dependency default of ``serve``, the demo
and the tests; ``serve --workers N`` runs the same app under gunicorn instead (``workers.py``).

Slow clients cannot hold it (issue 12): every connection is in one phase at a time, each with a
total deadline that no byte resets, enforced by a reaper thread that shuts the socket down:

=========  ============================================  ============================
phase      from                                           deadline (``Limits``)
=========  ============================================  ============================
``head``   accept (TLS handshake included) or the end     ``header_timeout`` (10 s)
           of the previous answer on a kept-alive one
``body``   the headers parsed                            ``body_timeout`` (20 s)
``app``    the body read: the application works          none (our own work)
``write``  the answer starts                             ``write_timeout`` (20 s)
=========  ============================================  ============================

A connection slot is taken at accept: at most ``max_connections`` in all and
``max_per_address`` per client address.  When a newcomer finds no slot, the connection that
has spent longest unfinished in ``head`` or ``body`` (at least ``evict_after``, 0.1 s) is
dropped to make room: a slow client is the first to go, a device that sends its request at
once is never the oldest.  The grace is short on purpose: an attacker who reopens its
connections keeps them young, and with a long grace a burst of fresh ones would hold every
slot until it passed.  Only when nothing can be dropped does the newcomer get a 503.

The body is read by the server (up to 4x the app's ``max_body``, under its deadline) before the
app runs, so a slow body never holds the application.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from .app import DEFAULT_MAX_BODY, DRAIN_FACTOR, HEADER_PAIRS_KEY
from .http_date import http_date
from .request_head import HeadReadingHandler

__all__ = ["EmbeddedServer", "Limits"]

logger = logging.getLogger(__name__)

_VERSION = "edgetelemetry-endpoint/1"
_REAP_INTERVAL = 0.1
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the embedded server (see the module docstring)."""

    max_connections: int = 128
    max_per_address: int = 32
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    write_timeout: float = 20.0
    evict_after: float = 0.1

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 1:
            raise ValueError("max_connections and max_per_address must be at least 1")
        for name in ("header_timeout", "body_timeout", "write_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(f"{name} must be in (0, 3600] seconds")
        if self.evict_after < 0:
            raise ValueError("evict_after must not be negative")


class _Conn:
    """One accepted connection as the slot table sees it."""

    __slots__ = ("address", "deadline", "done", "handle", "phase", "since")

    def __init__(self, handle: socket.socket, address: str, deadline: float) -> None:
        self.handle = handle  # a dup of the accepted socket: shutting it down ends the reads
        self.address = address
        self.phase = "head"
        self.since = time.monotonic()
        self.deadline: float | None = deadline
        self.done = False  # its slot is given back (ended, reaped or evicted)

    def drop(self, how: int = socket.SHUT_RDWR) -> None:
        try:
            self.handle.shutdown(how)
        except OSError:
            pass


class _Slots:
    """The connection table: admission, eviction, deadlines."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._per_address: dict[str, int] = {}
        self.evicted = 0
        self.reaped = 0
        self.refused = 0

    def admit(self, sock: socket.socket, address: str) -> _Conn | None:
        limits = self.limits
        now = time.monotonic()
        victim = None
        with self._lock:
            if self._per_address.get(address, 0) >= limits.max_per_address:
                victim = self._stalest(now, address)
                if victim is None:
                    self.refused += 1
                    return None
            elif len(self._conns) >= limits.max_connections:
                victim = self._stalest(now, None)
                if victim is None:
                    self.refused += 1
                    return None
            if victim is not None:
                self._release(victim)
                self.evicted += 1
            conn = _Conn(sock.dup(), address, now + limits.header_timeout)
            self._conns.add(conn)
            self._per_address[address] = self._per_address.get(address, 0) + 1
        if victim is not None:
            logger.info(
                "dropped a slow connection from %s (%.1f s in %s) for one from %s",
                victim.address, now - victim.since, victim.phase, address,
            )
            victim.drop()
        return conn

    def _stalest(self, now: float, address: str | None) -> _Conn | None:
        best = None
        for conn in self._conns:
            if conn.phase not in ("head", "body") or now - conn.since < self.limits.evict_after:
                continue
            if address is not None and conn.address != address:
                continue
            if best is None or conn.since < best.since:
                best = conn
        return best

    def enter(self, conn: _Conn, phase: str, timeout: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            conn.phase = phase
            conn.since = now
            conn.deadline = None if timeout is None else now + timeout

    def _release(self, conn: _Conn) -> None:  # with the lock held
        if conn.done:
            return
        conn.done = True
        self._conns.discard(conn)
        left = self._per_address.get(conn.address, 1) - 1
        if left:
            self._per_address[conn.address] = left
        else:
            self._per_address.pop(conn.address, None)

    def release(self, conn: _Conn) -> None:
        with self._lock:
            self._release(conn)
        conn.handle.close()

    def reap(self) -> None:
        """Shut down every connection past its phase's deadline."""
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._conns if c.deadline is not None and now > c.deadline]
            for conn in late:
                self._release(conn)
            self.reaped += len(late)
        for conn in late:
            logger.debug("closed a connection from %s: %s deadline passed", conn.address,
                         conn.phase)
            conn.drop()

    def stop_reading(self) -> None:
        """End every connection's reads: idle ones close, answers in flight are still written."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.drop(socket.SHUT_RD)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._conns)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # the listen backlog: socketserver's 5 drops SYNs from a burst of devices (each then waits
    # a second for its retry) while the accept thread starts connection threads
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        app: WSGIApp,
        limits: Limits,
        ssl_context: ssl.SSLContext | None,
        clock: Callable[[], float],
        listening: socket.socket | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.slots = _Slots(limits)
        self.ssl_context = ssl_context
        self.clock = clock
        self.max_body = int(getattr(app, "max_body", DEFAULT_MAX_BODY))
        self._conn_threads: set[threading.Thread] = set()
        self._conn_threads_lock = threading.Lock()
        # conn comes from _run
        if listening is None:
            super().__init__(address, _Handler)  # type: ignore[arg-type]
        else:  # a socket bound and listening already (a gunicorn worker's): no socket of its own
            socketserver.BaseServer.__init__(
                self, listening.getsockname(), _Handler  # type: ignore[arg-type]
            )
            self.socket = listening

    def process_request(self, request: Any, client_address: Any) -> None:
        conn = self.slots.admit(request, str(client_address[0]))
        if conn is None:
            self._refuse_busy(request)
            return
        thread = threading.Thread(
            target=self._run, args=(request, client_address, conn), daemon=True,
            name=f"edgetelemetry-endpoint-{client_address[1]}",
        )
        with self._conn_threads_lock:
            self._conn_threads.add(thread)
        thread.start()

    def _run(self, raw: socket.socket, client_address: Any, conn: _Conn) -> None:
        request: socket.socket | None = raw
        try:
            if self.ssl_context is not None:
                request = self._tls(raw)
            if request is not None:
                self.finish_request(request, client_address, conn)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.slots.release(conn)
            if request is not None:
                self.shutdown_request(request)
            with self._conn_threads_lock:
                self._conn_threads.discard(threading.current_thread())

    def finish_request(self, request: Any, client_address: Any, conn: Any = None) -> None:
        _Handler(request, client_address, self, conn)

    def _tls(self, raw: socket.socket) -> socket.socket | None:
        """The TLS handshake, in the connection's thread, within its ``head`` deadline."""
        assert self.ssl_context is not None
        try:
            raw.settimeout(self.limits.header_timeout)
            return self.ssl_context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            logger.debug("TLS handshake failed: %s", exc)
            raw.close()
            return None

    def _refuse_busy(self, request: socket.socket) -> None:
        body = json.dumps({"message": "Too many open connections; retry later."}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            f"Date: {http_date(self.clock())}\r\n"
            "x-amzn-ErrorType: ServiceUnavailable\r\n"
            f"x-amzn-RequestId: {uuid.uuid4()}\r\n"
            "Retry-After: 1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            if self.ssl_context is None:  # a TLS client could not read it in plain text
                request.settimeout(1.0)
                request.sendall(head.encode("latin-1") + body)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # connection-level failures (client gone, timeouts) that are not the server's fault
        logger.debug("connection from %s ended: %s", client_address, sys.exc_info()[1])

    def join_connections(self, timeout: float) -> None:
        self.slots.stop_reading()
        deadline = time.monotonic() + timeout
        with self._conn_threads_lock:
            threads = list(self._conn_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(HeadReadingHandler):
    server: _Server
    _headers_buffer: list[bytes]  # http.server's: send_header appends, flush_headers writes
    protocol_version = "HTTP/1.1"
    server_version = _VERSION
    sys_version = ""

    def __init__(self, request: Any, client_address: Any, server: _Server, conn: _Conn) -> None:
        self.conn = conn
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        # a safety net per socket operation; the phase deadlines are the real bounds
        limits = self.server.limits
        self.timeout = max(limits.header_timeout, limits.write_timeout)  # type: ignore[misc]
        super().setup()

    def version_string(self) -> str:
        return _VERSION

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP caught by http.server itself: answer AWS-style, then close."""
        status = code if 400 <= code < 500 else 400
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # answer with headers all the same
        body = json.dumps({"message": message or "Malformed HTTP request."}).encode()
        self.send_response_only(status)
        self._write_head(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("x-amzn-RequestId", str(uuid.uuid4())),
                ("x-amzn-ErrorType", "SerializationException"),
                ("Date", http_date(self.server.clock())),
                ("Connection", "close"),
            ],
            body,
        )

    def _write_head(self, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        """The status line (already buffered), the header fields and ``body`` in one write:
        one system call, and no small segment for Nagle's algorithm to hold back."""
        self.send_header("Server", _VERSION)
        for name, value in headers:
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n")  # http.server's buffer, as end_headers() does
        if body:
            self._headers_buffer.append(body)
        self.flush_headers()

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.server.slots.enter(self.conn, "head", self.server.limits.header_timeout)
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (OSError, ValueError):
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        try:
            if not self.parse_request():  # an error answer was sent
                return
        except (OSError, ValueError):
            self.close_connection = True
            return
        slots, limits = self.server.slots, self.server.limits
        slots.enter(self.conn, "body", limits.body_timeout)
        body = self._read_body()
        slots.enter(self.conn, "app", None)
        self._run_app(body)
        self.wfile.flush()

    def _read_body(self) -> bytes:
        """The body when its framing is one valid Content-Length within 4x the app's limit;
        otherwise nothing is read (the app refuses the framing) and the connection closes."""
        lengths = self.headers.get_all("Content-Length") or []
        text = lengths[0].strip() if lengths else ""
        if (
            self.headers.get_all("Transfer-Encoding")
            or len({v.strip() for v in lengths}) != 1
            or not text.isdigit()
            or not text.isascii()
            or len(text) > 15
        ):
            if lengths or self.headers.get_all("Transfer-Encoding"):
                self.close_connection = True
            return b""
        length = int(text)
        if length > DRAIN_FACTOR * self.server.max_body:
            self.close_connection = True
            return b""
        try:
            body = self.rfile.read(length) if length else b""
        except OSError:  # a deadline passed (the reaper shut the socket) or a reset
            body = b""
        if len(body) != length:
            self.close_connection = True
        return body

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        server_host, server_port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": self.path,
            "SERVER_NAME": str(server_host),
            "SERVER_PORT": str(server_port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.server.ssl_context is not None else "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            HEADER_PAIRS_KEY: list(self.headers.items()),
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ.setdefault(key, value)
                continue
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _run_app(self, body: bytes) -> None:
        answer: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            answer["status"], answer["headers"] = status, headers
            return lambda data: None  # the write() callable: this app never uses it

        chunks = self.server.app(self._environ(body), start_response)
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        code, _, reason = answer["status"].partition(" ")
        headers = list(answer["headers"])
        names = {name.lower() for name, _ in headers}
        if "date" not in names:
            headers.append(("Date", http_date(self.server.clock())))
        if any(n.lower() == "connection" and v.lower() == "close" for n, v in headers):
            self.close_connection = True
        elif self.close_connection:
            headers.append(("Connection", "close"))
        self.server.slots.enter(self.conn, "write", self.server.limits.write_timeout)
        self.send_response_only(int(code), reason)
        self._write_head(headers, data)


class EmbeddedServer:
    """Serve a WSGI ``app`` on ``host:port`` from a background thread (``start()``/``stop()``).

    ``ssl_context``: a server-side context (``--certfile/--keyfile``); the handshake runs in the
    connection's thread within its header deadline.  ``clock``: for the ``Date`` of answers the
    app does not write (malformed requests, 503).
    """

    def __init__(
        self,
        app: WSGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.host = host
        self.limits = limits or Limits()
        self.ssl_context = ssl_context
        self.clock = clock
        self._requested_port = port
        self._httpd: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def slots(self) -> _Slots:
        if self._httpd is None:
            raise RuntimeError("server is not started")
        return self._httpd.slots

    def start(self, listening: socket.socket | None = None) -> str:
        """Bind (``OSError`` when the address is taken), serve in the background, return the
        URL.  ``listening``: serve this socket, bound and listening already, instead (it is
        closed by ``stop``)."""
        if self._httpd is not None:
            raise RuntimeError("server is already started")
        server_class = _Server6 if ":" in self.host else _Server
        self._httpd = server_class(
            (self.host, self._requested_port), self.app, self.limits, self.ssl_context,
            self.clock, listening,
        )
        self._stopping.clear()
        self._threads = [
            threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                name="edgetelemetry-endpoint", daemon=True,
            ),
            threading.Thread(target=self._reap, name="edgetelemetry-reaper", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self.url

    def _reap(self) -> None:
        httpd = self._httpd
        assert httpd is not None
        while not self._stopping.wait(_REAP_INTERVAL):
            httpd.slots.reap()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end open connections, wait for in-flight requests."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.join_connections(timeout)
        for thread in self._threads:
            thread.join(timeout)
