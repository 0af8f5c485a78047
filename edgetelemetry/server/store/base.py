"""The store's interface, backend-free: what the endpoint, the fleet view and the registry need
of a store, the records it returns and the errors it raises.

Two backends implement ``FleetStore``: ``sqlite.Store`` (the default, one file, no dependency)
and ``postgresql.PostgresStore`` (psycopg 3 with a connection pool); ``open_store(target)`` picks
one from the target's scheme.  Defaults of the store live here, so every parser and caller
shares them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..errors import RegistrationError

__all__ = [
    "DEFAULT_KEEP_HOURLY",
    "DEFAULT_KEEP_RAW",
    "DEFAULT_STORE",
    "CompactionReport",
    "DeploymentResultInfo",
    "DeviceInfo",
    "DeviceRefused",
    "FleetStore",
    "LatestPoint",
    "MetricPoint",
    "ModelInfo",
    "RollupPoint",
    "SchemaOutOfDate",
    "StoreError",
]

# Where ``serve``, ``register`` and ``fleet status`` find the store when not told.
DEFAULT_STORE = "edgetelemetry-endpoint.sqlite3"

DAY = 86400.0
# Retention: raw heartbeats are kept this long (seconds, by metric timestamp), then rolled up
# into hourly aggregates, which are kept this long, then dropped (docs/store.md).
DEFAULT_KEEP_RAW = 7 * DAY
DEFAULT_KEEP_HOURLY = 90 * DAY


class StoreError(RuntimeError):
    """The store cannot be used (unreachable, newer schema, not a store, closed)."""


class SchemaOutOfDate(StoreError):
    """The store was written by an older edgetelemetry: ``edgetelemetry store migrate`` (or
    ``serve --migrate``) upgrades it; nothing else writes to it until then."""


class DeviceRefused(RegistrationError):
    """A request named a device the registry does not accept.

    ``reason``: ``"unregistered"`` (unknown name), ``"fleet"`` (registered in another fleet) or
    ``"deregistered"``.
    """

    def __init__(self, reason: Literal["unregistered", "fleet", "deregistered"], message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DeviceInfo:
    """A registered (or deregistered) device and its latest heartbeat, if any."""

    name: str
    fleet: str
    registered: bool
    registered_at: float
    last_heartbeat: float | None
    agent_version: str | None


@dataclass(frozen=True)
class ModelInfo:
    """A model a device reported, with the times its latest heartbeat gave."""

    name: str
    version: str
    latest_sample_time: float | None
    latest_inference: float | None
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class MetricPoint:
    """One value of a metric as a heartbeat carried it (raw, exact)."""

    timestamp: float
    value: float | None
    dimension: str
    model_version: str | None


@dataclass(frozen=True)
class LatestPoint:
    """The newest value of one series (device, model, version, metric, dimension)."""

    device: str
    model: str
    version: str
    metric: str
    dimension: str
    timestamp: float
    value: float | None


@dataclass(frozen=True)
class RollupPoint:
    """One hour of one series, merged from the raw heartbeats that retention rolled up.

    ``points`` values were merged: ``total`` is their sum, ``minimum``/``maximum`` their extremes
    (all exact).  ``weighted_mean`` is their mean weighted by the inference count the heartbeat
    carried beside them (the family's ``-count`` metric; 1 where there is none).

    ``value`` is the figure the metric's own statistic asks for: the sum for ``-count`` and
    ``-sum`` metrics, the minimum for ``-min``, the maximum for ``-max``, ``weighted_mean`` for
    the rest.  It is exact except for percentiles (``-p50``, ``-p99``...): the count-weighted mean
    of the windows' percentiles is an approximation of the hour's percentile (``exact`` is then
    False), while ``minimum`` and ``maximum`` of the windows' percentiles bound it exactly.
    """

    hour: float  # start of the hour, epoch seconds (metric timestamps)
    dimension: str
    model_version: str | None
    statistic: str  # count, sum, min, max, mean, pNN, or "gauge" (no statistic suffix)
    points: int
    total: float
    minimum: float | None
    maximum: float | None
    weighted_mean: float | None
    value: float | None
    exact: bool


@dataclass(frozen=True)
class DeploymentResultInfo:
    received_at: float
    deployment_name: str | None
    deployment_status: str | None
    status_message: str | None
    start_time: float | None
    end_time: float | None
    models: list[dict[str, Any]]


@dataclass(frozen=True)
class CompactionReport:
    """What one compaction pass did (``FleetStore.compact``)."""

    heartbeats_rolled_up: int
    rollup_rows_merged: int
    rollups_dropped: int
    deployment_results_dropped: int
    devices_visited: int
    complete: bool  # False: the time budget ran out; the next pass continues
    seconds: float


class FleetStore(Protocol):
    """A store of registrations, deployment plans, heartbeats, models and metrics.

    Writes are durable when they return (the endpoint answers 200 after ``record_heartbeat``);
    every method is safe to call from several threads, and from several processes or replicas
    sharing one database.  ``path`` names it in messages (never with a password).
    """

    path: str | None

    # registration
    def register_fleet(self, name: str, description: str | None = None) -> None: ...
    def register_devices(self, fleet: str, names: Iterable[str]) -> None: ...
    def register_device(self, name: str, fleet: str) -> None: ...
    def deregister_devices(self, names: Iterable[str]) -> None: ...
    def check_device(self, name: str, fleet: str, *, auto_register: bool = False,
                     allow_deregistered: bool = True) -> str: ...

    # deployments
    def put_deployment(self, deployment: Mapping[str, Any], *, fleets: Sequence[str] = (),
                       devices: Sequence[str] = ()) -> None: ...
    def remove_deployment(self, name: str) -> None: ...
    def deployments_for(self, device: str, fleet: str) -> list[dict[str, Any]]: ...

    # heartbeats: True when stored, False when it is a resend of a stored one (nothing written)
    def record_heartbeat(self, request: Mapping[str, Any], *, access_key_id: str | None = None,
                         auto_register: bool = False,
                         received_at: float | None = None) -> bool: ...

    # queries
    def devices(self, fleet: str | None = None) -> list[DeviceInfo]: ...
    def models(self, device: str) -> list[ModelInfo]: ...
    def models_by_device(self, fleet: str | None = None) -> dict[str, list[ModelInfo]]: ...
    def metric_series(self, device: str, model: str | None, metric_name: str,
                      since: float | None = None, until: float | None = None,
                      dimension: str | None = None) -> list[MetricPoint]: ...
    def metric_rollups(self, device: str, model: str | None, metric_name: str,
                       since: float | None = None, until: float | None = None,
                       dimension: str | None = None) -> list[RollupPoint]: ...
    def metric_names(self, device: str, model: str, prefix: str = "") -> list[str]: ...
    def latest_points(self, device: str, model: str, version: str,
                      metric_name: str) -> tuple[float | None, dict[str, float | None]]: ...
    def latest_by_prefix(self, prefix: str, fleet: str | None = None,
                         suffixes: Sequence[str] = ()) -> list[LatestPoint]: ...
    def latest_agent_points(self, fleet: str | None = None, names: Sequence[str] = (),
                            device: str | None = None) -> list[LatestPoint]: ...
    def latest_deployment_results(
        self, fleet: str | None = None) -> dict[str, DeploymentResultInfo]: ...
    def heartbeat_count(self, device: str | None = None) -> int: ...
    def deployment_results(self, device: str, limit: int = 100) -> list[DeploymentResultInfo]: ...

    # one process of those sharing the store leads ``name`` (alerts are sent by one)
    def hold_lead(self, name: str) -> bool: ...

    # upkeep
    def compact(self, *, keep_raw: float = DEFAULT_KEEP_RAW,
                keep_hourly: float = DEFAULT_KEEP_HOURLY, budget: float | None = None,
                now: float | None = None) -> CompactionReport: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...
