"""``EndpointServer``: the endpoint for library users and tests - the WSGI app (``app.py``) on
the embedded server (``embedded.py``), in this process, with its own store unless given one."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

from .alerts import AlertConfig, AlertEvaluator
from .app import DEFAULT_CACHE_TTL, DEFAULT_MAX_BODY, EndpointApp
from .embedded import EmbeddedServer, Limits
from .fleet.queries import DEFAULT_OFFLINE_AFTER
from .metrics import DEFAULT_MAX_SERIES
from .sigv4 import Credential
from .store import FleetStore, open_store

__all__ = ["EndpointServer"]

logger = logging.getLogger(__name__)


class EndpointServer:
    """A self-hosted Edge Manager data-plane endpoint (``SendHeartbeat``, ``GetDeviceRegistration``,
    ``GetDeployments``) that verifies SigV4 and keeps everything in a store.

    ::

        with EndpointServer("fleet.sqlite3", credentials={"AKID...": "secret"}) as server:
            server.store.register_fleet("line-1")
            server.store.register_devices("line-1", ["cam-1"])
            boto3.client("sagemaker-edge", endpoint_url=server.url, ...)

    ``store_path=None`` keeps the store in memory; ``store=`` serves an open ``FleetStore``.
    ``credentials`` maps access key ids to a secret or to ``{"secret_access_key",
    "session_token"?, "fleets"?}`` (see ``sigv4.Credential``).  ``auto_register`` registers
    unknown devices (and fleets) on first contact: for demos and development, not for fleets.
    ``rate_limit`` (requests/s per access key, burst ``burst``) turns on throttling.  ``clock``
    is the server's time: signature skew, ``Date``, receive times.

    Connections: at most ``max_connections`` (``max_per_address`` from one address); the
    request headers must arrive within ``header_timeout`` seconds and the body within
    ``body_timeout``, whatever the pace; a newcomer that finds no slot drops the connection
    longest unfinished (at least ``evict_after`` seconds) before it is refused (see
    ``embedded.py``).  ``ssl_context`` serves HTTPS.

    ``trust_forwarded``: a reverse proxy on this machine is the peer, so the client's address
    is the last ``X-Forwarded-For`` entry (for the fleet page's loopback rule and the log).

    ``fleet_page`` serves the read-only fleet page at ``GET /fleet`` (``web.FleetPage``): to
    loopback clients only, or, with ``fleet_viewers`` (``{user: password}``), to any client with
    those HTTP Basic credentials.  ``offline_after`` is its default recency window (seconds).

    ``metrics`` serves ``GET /metrics`` (``metrics.MetricsRoute``) under the page's access rule,
    or to any client with ``metrics_token`` as its bearer token; ``metrics_max_series`` caps the
    series one scrape exposes.  ``alerts`` (``alerts.AlertConfig``) runs the alert evaluator
    while the server runs.
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
        max_per_address: int = 32,
        header_timeout: float = 10.0,
        body_timeout: float = 20.0,
        request_timeout: float = 20.0,
        evict_after: float = 0.1,
        ssl_context: ssl.SSLContext | None = None,
        store: FleetStore | None = None,
        fleet_page: bool = True,
        fleet_viewers: Mapping[str, str] | None = None,
        offline_after: float = DEFAULT_OFFLINE_AFTER,
        trust_forwarded: bool = False,
        metrics: bool = True,
        metrics_token: str | None = None,
        metrics_max_series: int = DEFAULT_MAX_SERIES,
        alerts: AlertConfig | None = None,
    ) -> None:
        if not credentials:
            raise ValueError("an endpoint needs at least one credential (access key -> secret)")
        limits = Limits(
            max_connections=max_connections,
            max_per_address=max_per_address,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            write_timeout=request_timeout,
            evict_after=evict_after,
        )
        self._owns_store = store is None
        self.store: FleetStore = store if store is not None else open_store(store_path, clock=clock)
        try:
            self.alerts = (
                AlertEvaluator.configured(self.store, alerts, clock) if alerts is not None else None
            )
            self.app = EndpointApp(
                self.store,
                credentials,
                region,
                clock,
                auto_register=auto_register,
                cache_ttl=cache_ttl,
                max_body=max_body,
                rate_limit=rate_limit,
                burst=burst,
                fleet_page=fleet_page,
                fleet_viewers=fleet_viewers,
                offline_after=offline_after,
                trust_forwarded=trust_forwarded,
                metrics=metrics,
                metrics_token=metrics_token,
                metrics_max_series=metrics_max_series,
                alerts=self.alerts,
            )
        except ValueError:
            if self._owns_store:
                self.store.close()
            raise
        self.host = host
        self.region = region
        self.clock = clock
        self.limits = limits
        self.server = EmbeddedServer(
            self.app, host, port, limits=limits, ssl_context=ssl_context, clock=clock
        )

    # what the app holds, under the names the endpoint has always had
    @property
    def verifier(self) -> Any:
        return self.app.verifier

    @property
    def max_body(self) -> int:
        return self.app.max_body

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> str:
        """Bind, serve on background threads, and return the URL (``http(s)://host:port``)."""
        url = self.server.start()
        if self.alerts is not None:
            self.alerts.start()
        logger.info(
            "edgetelemetry endpoint on %s (region %s, store %s, %d access key(s))",
            url, self.region, self.store.path or ":memory:", self.app.key_count,
        )
        return url

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end open connections, wait for in-flight requests, close the store it
        opened."""
        if self.alerts is not None:
            self.alerts.stop(timeout)
        self.server.stop(timeout)
        if self._owns_store:
            self.store.close()

    def reload_credentials(
        self, credentials: Mapping[str, str | Mapping[str, Any] | Credential]
    ) -> None:
        self.app.reload_credentials(credentials)

    def __enter__(self) -> EndpointServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
