"""``GET /metrics``: the fleet and the endpoint itself in the Prometheus text format.

The text is written by prometheus_client's exposition (``generate_latest``) from a custom
collector that reads the store at scrape time (``FleetCollector``), beside a prometheus_client
``Counter`` of the endpoint's requests; nothing here formats exposition text by hand.

Families (every one a gauge unless said; ``docs/prometheus.md`` has the full table):

- ``edgetelemetry_device_up{fleet,device}``: 1 when the device's latest heartbeat is within
  ``offline_after`` seconds of the server clock; ``..._device_last_heartbeat_timestamp_seconds``;
  ``..._device_info{fleet,device,agent_version}`` (always 1).
- per ``{fleet,device,model,version,metric,dimension}``, the latest window's figures as the
  heartbeat carried them: ``..._window_count``, ``_sum``, ``_min``, ``_max``, ``_mean``,
  ``_dropped``, ``_rejected``, ``..._window_quantile{...,quantile="0.5"}`` (p50, p90, p95, p99)
  and ``..._window_timestamp_seconds`` (the window's end, device clock).  ``metric`` is the
  heartbeat's base name (``latency-ms`` for ``latency-ms-p99``).  A name with no statistic suffix
  is a ``..._model_gauge``.
- ``edgetelemetry_agent_metric{fleet,device,name}``: the agents' own metrics (spool bytes,
  backlog, dead letters...).
- ``edgetelemetry_endpoint_requests_total{operation,status}`` (counter).
- ``edgetelemetry_exporter_series`` and ``edgetelemetry_exporter_series_dropped``: what this
  scrape exposed, and what the cardinality cap left out.

Why gauges and a quantile label, not a summary or histogram: a heartbeat carries each window's
count, sum and percentiles, not the recorder's buckets, so there is nothing to build classic or
native histogram buckets from; and the count and sum are per window, not the cumulative counters a
Prometheus summary's ``_count``/``_sum`` must be.  Gauges say exactly what the figures are.  The
consequence: quantiles cannot be aggregated across devices (``max`` or ``avg`` of p99s is an
approximation at best); per-window counts can be summed across devices.

Cardinality is bounded by ``max_series``: the store's registry bounds devices, the recorder's
naming rules bound metric and dimension names, and past ``max_series`` model series whole devices
(in name order, so the same ones from one scrape to the next) lose their model and agent series,
counted in ``edgetelemetry_exporter_series_dropped`` and logged.  Device ``up``/last-seen are
never dropped: they are what an operator needs first.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from .fleet.queries import DEFAULT_OFFLINE_AFTER
from .fleet.web import FleetPage, Headers, WebAnswer
from .private_file import read_private
from .store import FleetStore, LatestPoint, StoreError

__all__ = [
    "DEFAULT_MAX_SERIES",
    "METRICS_PATH",
    "FleetCollector",
    "MetricsRoute",
    "read_token_file",
]

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
DEFAULT_MAX_SERIES = 250_000
_PREFIX = "edgetelemetry"
# The classic text format every Prometheus 2.x reads; generate_latest writes it for names in the
# legacy character set, which all of ours are (newer prometheus_client labels it 1.0.0).
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MODEL_LABELS = ["fleet", "device", "model", "version", "metric", "dimension"]
# statistic suffix -> family (under edgetelemetry_window_); percentiles go to the quantile family
_STAT_FAMILIES = {
    "count": "count",
    "sum": "sum",
    "min": "min",
    "max": "max",
    "mean": "mean",
    "dropped": "dropped",
    "rejected": "rejected",
}
_QUANTILES = {"p50": "0.5", "p90": "0.9", "p95": "0.95", "p99": "0.99"}


def _split(metric: str) -> tuple[str, str]:
    """``latency-ms-p99`` -> (``latency-ms``, ``p99``); a name without a known statistic is a
    gauge: (name, "")."""
    base, sep, stat = metric.rpartition("-")
    if sep and base and (stat in _STAT_FAMILIES or stat in _QUANTILES):
        return base, stat
    return metric, ""


class FleetCollector:
    """Reads the store at each scrape: three queries for the whole fleet, whatever its size."""

    def __init__(
        self,
        store: FleetStore,
        clock: Callable[[], float] = time.time,
        *,
        offline_after: float = DEFAULT_OFFLINE_AFTER,
        max_series: int = DEFAULT_MAX_SERIES,
        fleet: str | None = None,
    ) -> None:
        if max_series < 0:
            raise ValueError("max_series must be 0 or more")
        self.fleet = fleet  # None: every fleet
        self.store = store
        self.clock = clock
        self.offline_after = offline_after
        self.max_series = max_series
        self._warned_dropped = 0

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        devices = self.store.devices(self.fleet)
        fleet_of = {d.name: d.fleet for d in devices if d.registered}
        up = GaugeMetricFamily(
            f"{_PREFIX}_device_up",
            "1 when the device's latest heartbeat is within offline_after seconds, else 0",
            labels=["fleet", "device"],
        )
        seen = GaugeMetricFamily(
            f"{_PREFIX}_device_last_heartbeat_timestamp_seconds",
            "Server time of the device's latest heartbeat",
            labels=["fleet", "device"],
        )
        info = GaugeMetricFamily(
            f"{_PREFIX}_device_info",
            "The agent version the device's latest heartbeat named (value always 1)",
            labels=["fleet", "device", "agent_version"],
        )
        for d in devices:
            if not d.registered:
                continue
            labels = [d.fleet, d.name]
            last = d.last_heartbeat
            up.add_metric(
                labels, 1.0 if last is not None and now - last <= self.offline_after else 0.0
            )
            if last is not None:
                seen.add_metric(labels, last)
            if d.agent_version:
                info.add_metric([*labels, d.agent_version], 1.0)
        yield up
        yield seen
        yield info

        families = {
            stat: GaugeMetricFamily(
                f"{_PREFIX}_window_{family}",
                f"The {family} of the latest window a device reported for a model series",
                labels=_MODEL_LABELS,
            )
            for stat, family in _STAT_FAMILIES.items()
        }
        quantile = GaugeMetricFamily(
            f"{_PREFIX}_window_quantile",
            "A percentile of the latest window (within the recorder's relative error)",
            labels=[*_MODEL_LABELS, "quantile"],
        )
        gauge = GaugeMetricFamily(
            f"{_PREFIX}_model_gauge",
            "The latest value of a model metric without a statistic suffix",
            labels=_MODEL_LABELS,
        )
        stamp = GaugeMetricFamily(
            f"{_PREFIX}_window_timestamp_seconds",
            "End of the latest window of a model series (device clock)",
            labels=_MODEL_LABELS,
        )
        agent = GaugeMetricFamily(
            f"{_PREFIX}_agent_metric",
            "The latest value of one of the agent's own metrics (AgentMetrics)",
            labels=["fleet", "device", "name"],
        )
        by_device: dict[str, list[LatestPoint]] = {}
        for p in self.store.latest_by_prefix("", self.fleet):
            by_device.setdefault(p.device, []).append(p)
        agent_by_device: dict[str, list[LatestPoint]] = {}
        for p in self.store.latest_agent_points(self.fleet):
            agent_by_device.setdefault(p.device, []).append(p)

        exposed = 3 * len(fleet_of)
        dropped = 0
        for name in sorted(set(by_device) | set(agent_by_device)):
            fleet = fleet_of.get(name)
            if fleet is None:
                continue  # deregistered: its up/last-seen are gone too
            points = by_device.get(name, [])
            agents = agent_by_device.get(name, [])
            stamps = {(p.model, p.version, _split(p.metric)[0], p.dimension) for p in points}
            cost = len(points) + len(agents) + len(stamps)
            if exposed + cost > self.max_series:
                dropped += cost
                continue
            exposed += cost
            newest: dict[tuple[str, str, str, str], float] = {}
            for p in points:
                base, stat = _split(p.metric)
                labels = [fleet, name, p.model, p.version, base, p.dimension]
                key = (p.model, p.version, base, p.dimension)
                newest[key] = max(p.timestamp, newest.get(key, p.timestamp))
                value = math.nan if p.value is None else p.value
                if stat in _QUANTILES:
                    quantile.add_metric([*labels, _QUANTILES[stat]], value)
                elif stat:
                    families[stat].add_metric(labels, value)
                else:
                    gauge.add_metric(labels, value)
            for (model, version, base, dimension), ts in newest.items():
                stamp.add_metric([fleet, name, model, version, base, dimension], ts)
            for p in agents:
                agent.add_metric([fleet, name, p.metric], math.nan if p.value is None else p.value)
        yield from families.values()
        yield quantile
        yield gauge
        yield stamp
        yield agent
        if dropped and dropped != self._warned_dropped:
            logger.warning(
                "/metrics: %d series over the cap of %d were left out (raise --metrics-max-series"
                " or scrape each fleet: /metrics?fleet=NAME)",
                dropped,
                self.max_series,
            )
        self._warned_dropped = dropped
        yield GaugeMetricFamily(
            f"{_PREFIX}_exporter_series", "Series this scrape exposed", value=float(exposed)
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_exporter_series_dropped",
            "Series this scrape left out because of the max_series cap",
            value=float(dropped),
        )


class MetricsRoute:
    """Answers ``GET /metrics`` for ``EndpointServer`` and counts its requests.

    Access: with ``token`` set, every scrape needs ``Authorization: Bearer <token>`` (compared in
    constant time), from any address; without it, the fleet page's rule applies (loopback clients
    under a loopback Host, or the page's HTTP Basic viewer credentials).
    """

    def __init__(
        self,
        store: FleetStore,
        page_access: FleetPage | None,
        clock: Callable[[], float] = time.time,
        *,
        token: str | None = None,
        offline_after: float = DEFAULT_OFFLINE_AFTER,
        max_series: int = DEFAULT_MAX_SERIES,
        viewers: Mapping[str, str] | None = None,
    ) -> None:
        if token is not None and len(token) < 16:
            raise ValueError("the metrics bearer token must be at least 16 characters")
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = FleetCollector(
            store, clock, offline_after=offline_after, max_series=max_series
        )
        self.registry.register(self.collector)
        self.requests = Counter(
            "edgetelemetry_endpoint_requests",
            "Requests the endpoint answered, by operation and HTTP status",
            ["operation", "status"],
            registry=self.registry,
        )
        self._token = token.encode() if token is not None else None
        # the page's access rule, even when the page itself is off
        self._access = page_access or FleetPage(
            store, clock, viewers=viewers, offline_after=offline_after
        )
        self._lock = threading.Lock()  # one scrape reads the store at a time

    @staticmethod
    def handles(path: str) -> bool:
        return path.split("?", 1)[0] == METRICS_PATH

    def count(self, operation: str, status: int) -> None:
        self.requests.labels(operation, str(status)).inc()

    def _refusal(self, headers: Headers, client_host: str) -> WebAnswer | None:
        if self._token is None:
            return self._access.refusal(headers, client_host)
        scheme, _, given = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return None
        return _text(401, "A bearer token is required.", ("WWW-Authenticate", "Bearer"))

    def respond(self, method: str, target: str, headers: Headers, client_host: str) -> WebAnswer:
        refusal = self._refusal(headers, client_host)
        if refusal is not None:
            return refusal
        if method not in ("GET", "HEAD"):
            return _text(405, "GET or HEAD only.", ("Allow", "GET, HEAD"))
        fleets = parse_qs(urlsplit(target).query).get("fleet", [])
        if len(fleets) > 1 or (fleets and not fleets[0]):
            return _text(400, "Give at most one non-empty fleet.")
        registry = self.registry
        if fleets:  # one fleet's devices only; the endpoint's own counters stay on /metrics
            registry = CollectorRegistry(auto_describe=False)
            collector = self.collector
            registry.register(
                FleetCollector(
                    collector.store,
                    collector.clock,
                    offline_after=collector.offline_after,
                    max_series=collector.max_series,
                    fleet=fleets[0],
                )
            )
        try:
            with self._lock:
                body = generate_latest(registry)
        except StoreError as exc:
            logger.warning("/metrics: %s", exc)
            return _text(503, "The store is not available.")
        return WebAnswer(200, _CONTENT_TYPE, body, (("Cache-Control", "no-store"),))


def _text(status: int, message: str, *headers: tuple[str, str]) -> WebAnswer:
    return WebAnswer(status, "text/plain; charset=utf-8", (message + "\n").encode(), headers)


def read_token_file(path: str) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped): the file must be private
    to its owner, like the endpoint's credentials file."""
    token = read_private(path, "metrics token file", 4096).decode("utf-8").strip()
    if len(token) < 16:
        raise ValueError(f"metrics token file {path} must hold a token of 16 characters or more")
    return token
