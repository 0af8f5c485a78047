"""The OTLP sink: each spooled window POSTed to an OpenTelemetry Collector's ``/v1/metrics`` as
an ``ExportMetricsServiceRequest`` (``application/x-protobuf``, gzip by default).

``send`` never raises for a network or server failure: it returns a ``SendResult`` with the
``Sender``'s outcomes, so the delivery loop treats every sink alike.  Classes, per OTLP/HTTP's
rules and our at-least-once stance (only what the receiver calls bad data is dead-lettered):

=========================================== ========= =============================================
answer                                      outcome   counted as (``stats()``)
=========================================== ========= =============================================
2xx (``partial_success`` counted, logged)   OK        send-successes (points-rejected)
429                                         RETRY     send-failures-throttled
408, timeout                                RETRY     send-failures-timeout
5xx                                         RETRY     send-failures-5xx
refused, reset, DNS, TLS                    RETRY     send-failures-connection
401, 403                                    RETRY     send-failures-auth (keys may be rotated)
400, 413, 415, 422                          FATAL     send-failures-rejected (dead-lettered)
other 4xx                                   RETRY     send-failures-other
=========================================== ========= =============================================

Within one ``send``: up to ``max_attempts`` requests with full-jitter backoff, honouring a longer
``Retry-After`` (capped).  Headers (``otlp_headers``: credentials) are never logged.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..otlp import OtlpIdentity, build_metrics_request
from ..snapshot import Snapshot
from .sender import Outcome, SendResult, full_jitter, server_date
from .sink_config import OTLP_SINK

if TYPE_CHECKING:
    from .config import AgentConfig

__all__ = ["OtlpSink"]

log = logging.getLogger(__name__)

_FATAL_STATUS = frozenset({400, 413, 415, 422})
_STAT_KEYS = ("send-attempts", "send-successes", "send-retries", "send-failures-throttled",
              "send-failures-timeout", "send-failures-5xx", "send-failures-connection",
              "send-failures-auth", "send-failures-rejected", "send-failures-other",
              "bytes-sent", "points-rejected")
_USER_AGENT = "edgetelemetry-otlp"


class OtlpSink:
    """POST windows to ``endpoint`` (a full ``.../v1/metrics`` URL).  Thread-safe."""

    name = OTLP_SINK

    def __init__(
        self,
        endpoint: str,
        identity: OtlpIdentity,
        *,
        headers: Sequence[tuple[str, str]] = (),
        compression: str = "gzip",
        timeout_s: float = 10.0,
        ca_bundle: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        scale: int | None = None,
        max_attempts: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http(s) URL, not {endpoint!r}")
        if compression not in ("gzip", "none"):
            raise ValueError(f"compression must be 'gzip' or 'none', not {compression!r}")
        self.endpoint = endpoint
        self.identity = identity
        self.scale = scale
        self._gzip = compression == "gzip"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path or "/v1/metrics"
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._tls = ssl.create_default_context(cafile=ca_bundle)
            if cert_file is not None:
                self._tls.load_cert_chain(cert_file, key_file)
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": _USER_AGENT,
                         **{name: value for name, value in headers}}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._timeout = float(timeout_s)
        self._max_attempts = max_attempts
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._conn: http.client.HTTPConnection | None = None
        self._send_lock = threading.Lock()
        self._stats_lock = threading.Lock()  # apart: stats() must not wait for a slow send
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._warned = False

    @classmethod
    def from_config(cls, config: AgentConfig, identity: OtlpIdentity, **kwargs: Any) -> OtlpSink:
        assert config.otlp_endpoint is not None
        scale = config.otlp_histogram_scale
        return cls(config.otlp_endpoint, identity, headers=config.otlp_headers or (),
                   compression=config.otlp_compression, timeout_s=config.otlp_timeout_s,
                   ca_bundle=config.otlp_ca_bundle, cert_file=config.otlp_cert_file,
                   key_file=config.otlp_key_file,
                   scale=None if scale == "auto" else int(scale),
                   max_attempts=config.max_attempts, backoff_base=config.backoff_base_s,
                   backoff_cap=config.backoff_cap_s, **kwargs)

    def payload(self, snap: Snapshot, metrics: Mapping[str, float]) -> bytes:
        """The request body for one window (compressed when gzip is on)."""
        body = build_metrics_request([snap], self.identity, agent_metrics=metrics,
                                     scale=self.scale).SerializeToString()
        return gzip.compress(body, compresslevel=6, mtime=0) if self._gzip else body

    def send(self, body: bytes) -> SendResult:
        with self._send_lock:
            attempt = 0
            while True:
                attempt += 1
                self._bump("send-attempts")
                result = self._attempt(body, attempt)
                if result.outcome in (Outcome.OK, Outcome.FATAL) \
                        or attempt >= self._max_attempts:
                    return result
                self._bump("send-retries")
                delay = full_jitter(self._rng, attempt - 1, self._backoff_base, self._backoff_cap)
                if result.retry_after_s is not None:
                    delay = min(self._backoff_cap, max(delay, result.retry_after_s))
                self._sleep(delay)

    def stats(self) -> dict[str, float]:
        with self._stats_lock:
            return {k: float(v) for k, v in self._stats.items()}

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __repr__(self) -> str:
        return f"OtlpSink({self.endpoint!r}, gzip={self._gzip})"  # never the headers

    # -- one request --------------------------------------------------------------------------

    def _attempt(self, body: bytes, attempt: int) -> SendResult:
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            answer = response.read()
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            self.close()
            timeout = isinstance(exc, TimeoutError)
            stat = "send-failures-timeout" if timeout else "send-failures-connection"
            return self._failed(stat, Outcome.RETRY, attempt, type(exc).__name__, str(exc), None,
                                None, None)
        status = response.status
        server_time = server_date({"Date": response.getheader("Date", "")})
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        if 200 <= status < 300:
            self._bump("send-successes")
            self._bump("bytes-sent", len(body))
            self._warned = False
            self._note_partial(answer, response.getheader("Content-Type", ""))
            return SendResult(Outcome.OK, attempt, http_status=status, server_time=server_time)
        retry_after = _retry_after(response.getheader("Retry-After"))
        message = answer[:200].decode(errors="replace")
        if status in _FATAL_STATUS:
            return self._failed("send-failures-rejected", Outcome.FATAL, attempt, str(status),
                                message, status, server_time, None)
        stat = ("send-failures-throttled" if status == 429 else
                "send-failures-timeout" if status == 408 else
                "send-failures-5xx" if status >= 500 else
                "send-failures-auth" if status in (401, 403) else "send-failures-other")
        if retry_after is None:
            retry_after = full_jitter(self._rng, attempt - 1, self._backoff_base,
                                      self._backoff_cap)
        return self._failed(stat, Outcome.RETRY, attempt, str(status), message, status,
                            server_time, retry_after)

    def _failed(self, stat: str, outcome: Outcome, attempt: int, code: str, message: str,
                status: int | None, server_time: float | None,
                retry_after: float | None) -> SendResult:
        self._bump(stat)
        level = logging.WARNING if not self._warned else logging.DEBUG
        self._warned = True
        log.log(level, "OTLP export to %s failed: %s %s", self.endpoint, code, message[:120])
        return SendResult(outcome, attempt, error_code=code, message=message,
                          retry_after_s=retry_after, http_status=status, server_time=server_time)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._tls is not None:
                self._conn = http.client.HTTPSConnection(self._host, self._port,
                                                         timeout=self._timeout,
                                                         context=self._tls)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self._timeout)
        return self._conn

    def _note_partial(self, answer: bytes, content_type: str) -> None:
        if not answer or "protobuf" not in content_type:
            return
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )

        response = ExportMetricsServiceResponse()
        try:
            response.ParseFromString(answer)
        except Exception:  # noqa: BLE001 - a 2xx is a delivery whatever its body
            return
        rejected = response.partial_success.rejected_data_points
        if rejected:
            self._bump("points-rejected", rejected)
            log.warning("OTLP receiver %s rejected %d data points: %s", self.endpoint,
                        rejected, response.partial_success.error_message[:200])

    def _bump(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n


def _retry_after(value: str | None) -> float | None:
    """Delay-seconds (what Collectors send); an HTTP-date form counts as none given."""
    try:
        seconds = float(value) if value else -1.0
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
