"""A slow-client flood and a stream of legitimate devices beside it, for the endpoint's tests.

``SlowFlood`` opens connections from several loopback source addresses (127.0.0.2, .3, ...: on
Linux the whole 127/8 is this machine, so per-address caps see distinct clients) and keeps each
one trickling: a request line, then one header byte every ``interval`` seconds (``phase="head"``)
or complete headers with a large ``Content-Length`` and one body byte per interval
(``phase="body"``).  A connection the server closes is opened again at once, as an attacker
would.  ``Devices`` sends signed heartbeats through boto3 one after another and records the
status and latency of each.  Everything stays on loopback and stops by itself.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError


@dataclass
class FloodFigures:
    opened: int = 0
    dropped_by_server: int = 0
    refused: int = 0  # connect failed or answered at once (503 / reset)


class SlowFlood:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        connections: int = 128,
        addresses: int = 8,
        interval: float = 4.0,
        body_share: float = 0.25,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.connections = connections
        self.sources = [f"127.0.0.{2 + i % 250}" for i in range(addresses)]
        self.interval = interval
        self.body_count = int(connections * body_share)
        self.tls = tls
        self.figures = FloodFigures()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-flood", daemon=True)
        self._socks: list[socket.socket | None] = [None] * connections

    def _open(self, k: int) -> socket.socket | None:
        source = self.sources[k % len(self.sources)]
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=2, source_address=(source, 0)
            )
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            if k < self.body_count:
                sock.sendall(
                    b"POST /SendHeartbeat HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n{"
                )
            else:
                sock.sendall(b"POST /SendHeartbeat HTTP/1.1\r\n")
            sock.setblocking(False)
        except OSError:
            self.figures.refused += 1
            return None
        self.figures.opened += 1
        return sock

    def _trickle(self, sock: socket.socket, k: int) -> bool:
        """One more byte; False when the server has closed (or answered) the connection."""
        try:
            if sock.recv(4096, socket.MSG_PEEK if self.tls is None else 0):
                return False  # an answer (503, 408...): the server is done with it
            return False  # EOF
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except OSError:
            return False
        try:
            sock.send(b"a" if k < self.body_count else b"X")
        except (BlockingIOError, ssl.SSLWantWriteError):
            pass
        except OSError:
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            for k in range(self.connections):
                if self._stop.is_set():
                    break
                sock = self._socks[k]
                if sock is not None and not self._trickle(sock, k):
                    self.figures.dropped_by_server += 1
                    sock.close()
                    sock = None
                if sock is None:
                    self._socks[k] = self._open(k)
            self._stop.wait(self.interval)

    def start(self) -> SlowFlood:
        self._thread.start()
        return self

    def stop(self) -> FloodFigures:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        for sock in self._socks:
            if sock is not None:
                sock.close()
        return self.figures

    def __enter__(self) -> SlowFlood:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class DeviceFigures:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=float("nan"))


def send_heartbeats(
    make_client: Callable[[], Any],
    make_params: Callable[[int], dict[str, Any]],
    count: int,
    pause: float,
) -> DeviceFigures:
    """``count`` heartbeats, ``pause`` seconds apart, each on a new client (a new connection)."""
    figures = DeviceFigures()
    for i in range(count):
        start = time.monotonic()
        try:
            answer = make_client().send_heartbeat(**make_params(i))
            status = int(answer["ResponseMetadata"]["HTTPStatusCode"])
        except ClientError as exc:
            status = int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
        except Exception as exc:  # a timeout or reset: counted, the figures show it
            figures.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            time.sleep(pause)
            continue
        figures.latencies.append(time.monotonic() - start)
        figures.statuses[status] = figures.statuses.get(status, 0) + 1
        time.sleep(pause)
    return figures
