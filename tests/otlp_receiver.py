"""A real OTLP/HTTP metrics receiver on loopback for the tests, switchable to misbehave.

It decodes every request with the official ``opentelemetry-proto`` classes (gzip or not) and
answers an ``ExportMetricsServiceResponse``, as a Collector's ``otlphttp`` receiver does.  Modes
(``set_mode``):

- ``ok``: 200;
- ``fail``: 503 with ``Retry-After: 0`` (a Collector whose pipeline is full), counted, not kept;
- ``reject``: 400 (the Collector cannot use the data: never retried, dead-lettered);
- ``partial``: 200 with ``partial_success`` rejecting one data point;
- ``hang``: reads the request and holds it unanswered until the mode changes or it stops, then
  drops it (never stored: a black hole, not a slow success);
- ``refuse``: the listening socket is closed (connection refused); another mode listens again
  on the same port.

``required_headers`` are checked on every request (401 without them).  ``received`` lists what
was accepted, in arrival order; ``windows()`` the (recorder id, window seq, spool seq) of each.
Run alone: ``python -m tests.otlp_receiver [port]`` prints a line per request until Ctrl-C.
"""

from __future__ import annotations

import gzip
import http.server
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

HOST = "127.0.0.1"
MODES = ("ok", "fail", "reject", "partial", "hang", "refuse")


@dataclass
class Received:
    request: ExportMetricsServiceRequest
    headers: dict[str, str]
    body_bytes: int  # as sent (compressed when gzip)
    encoding: str | None


class OtlpReceiver:
    def __init__(self, port: int = 0, required_headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}
        self.received: list[Received] = []
        self.counts: dict[str, int] = {}  # answers given, by mode
        self._mode = "ok"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/metrics"

    @property
    def mode(self) -> str:
        return self._mode

    def start(self) -> OtlpReceiver:
        if self._server is not None:
            return self
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                receiver._handle(self)

        server = http.server.ThreadingHTTPServer((HOST, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._changed.notify_all()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self._changed:
            self._mode = mode
            self._changed.notify_all()
        if mode == "refuse":
            self.stop()
            self._mode = "refuse"
        elif self._server is None:
            self.start()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} requests received, expected {n}")
            time.sleep(0.02)
        return list(self.received)

    def windows(self) -> list[tuple[str, int, int]]:
        """(recorder id, window seq, spool seq) of each accepted request with a window."""
        out = []
        for rec in self.received:
            gauges = {m.name: m.gauge.data_points[0]
                      for m in rec.request.resource_metrics[0].scope_metrics[0].metrics
                      if m.HasField("gauge")}
            seq = gauges.get("edgetelemetry.agent.window_seq")
            spool = gauges.get("edgetelemetry.agent.spool_seq")
            if seq is None:
                continue
            recorder = seq.attributes[0].value.string_value
            out.append((recorder, seq.as_int, int(spool.as_double) if spool else -1))
        return out

    # -- the handler ---------------------------------------------------------------------------

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length", "0"))
        body = h.rfile.read(length)
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._changed:
            mode = self._mode
            self.counts[mode] = self.counts.get(mode, 0) + 1
            while self._mode == "hang" and self._server is not None:
                self._changed.wait(0.1)
        if mode in ("hang", "refuse") or self._server is None:
            h.close_connection = True  # a hung request is dropped unanswered, never stored
            return
        if any(headers.get(k) != v for k, v in self.required_headers.items()):
            return self._answer(h, 401, b"missing or wrong credentials", "text/plain")
        if mode == "fail":
            return self._answer(h, 503, b"pipeline full", "text/plain", {"Retry-After": "0"})
        if mode == "reject":
            return self._answer(h, 400, b"bad data", "text/plain")
        if headers.get("content-type") != "application/x-protobuf":
            return self._answer(h, 415, b"protobuf only", "text/plain")
        encoding = headers.get("content-encoding")
        try:
            raw = gzip.decompress(body) if encoding == "gzip" else body
            request = ExportMetricsServiceRequest()
            request.ParseFromString(raw)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the client's
            return self._answer(h, 400, str(exc).encode(), "text/plain")
        with self._lock:
            self.received.append(Received(request, headers, len(body), encoding))
        response = ExportMetricsServiceResponse()
        if mode == "partial":
            response.partial_success.rejected_data_points = 1
            response.partial_success.error_message = "one point was not wanted"
        self._answer(h, 200, response.SerializeToString(), "application/x-protobuf")

    @staticmethod
    def _answer(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
                content_type: str, extra: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)


if __name__ == "__main__":
    with OtlpReceiver(int(sys.argv[1]) if len(sys.argv) > 1 else 4318) as rx:
        print(f"listening on {rx.url}", flush=True)
        seen = 0
        try:
            while True:
                time.sleep(0.2)
                for rec in rx.received[seen:]:
                    metrics = rec.request.resource_metrics[0].scope_metrics[0].metrics
                    print(f"{rec.body_bytes} bytes, {len(metrics)} metrics", flush=True)
                seen = len(rx.received)
        except KeyboardInterrupt:
            pass
