"""The store's interface, backend-free: what the endpoint, the fleet view and the registry need
of a store, the records it returns and the errors it raises.

``sqlite.Store`` is the one backend today; another (PostgreSQL) goes beside it and implements
``FleetStore``.  Defaults of the store live here, so every parser and caller shares them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..errors import RegistrationError

__all__ = [
    "DEFAULT_STORE",
    "DeploymentResultInfo",
    "DeviceInfo",
    "DeviceRefused",
    "FleetStore",
    "MetricPoint",
    "ModelInfo",
    "StoreError",
]

# Where ``serve``, ``register`` and ``fleet status`` find the store when not told.
DEFAULT_STORE = "edgetelemetry-endpoint.sqlite3"


class StoreError(RuntimeError):
    """The store file cannot be used (newer schema, not a database)."""


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
    timestamp: float
    value: float | None
    dimension: str
    model_version: str | None


@dataclass(frozen=True)
class DeploymentResultInfo:
    received_at: float
    deployment_name: str | None
    deployment_status: str | None
    status_message: str | None
    start_time: float | None
    end_time: float | None
    models: list[dict[str, Any]]


class FleetStore(Protocol):
    """A store of registrations, deployment plans, heartbeats, models and metrics.

    Writes are durable when they return (the endpoint answers 200 after ``record_heartbeat``);
    every method is safe to call from several threads.  ``path`` names it in messages.
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

    # heartbeats
    def record_heartbeat(self, request: Mapping[str, Any], *, access_key_id: str | None = None,
                         auto_register: bool = False,
                         received_at: float | None = None) -> int: ...

    # queries
    def devices(self, fleet: str | None = None) -> list[DeviceInfo]: ...
    def models(self, device: str) -> list[ModelInfo]: ...
    def metric_series(self, device: str, model: str | None, metric_name: str,
                      since: float | None = None, until: float | None = None,
                      dimension: str | None = None) -> list[MetricPoint]: ...
    def metric_names(self, device: str, model: str, prefix: str = "") -> list[str]: ...
    def latest_points(self, device: str, model: str, version: str,
                      metric_name: str) -> tuple[float | None, dict[str, float | None]]: ...
    def heartbeat_count(self, device: str | None = None) -> int: ...
    def deployment_results(self, device: str, limit: int = 100) -> list[DeploymentResultInfo]: ...

    def close(self) -> None: ...
