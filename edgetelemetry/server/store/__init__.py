"""The endpoint's store: one interface (``base.FleetStore``), the SQLite backend (``sqlite``),
and the registry document applied to any store (``registry``)."""

from __future__ import annotations

from .base import (
    DEFAULT_STORE,
    DeploymentResultInfo,
    DeviceInfo,
    DeviceRefused,
    FleetStore,
    MetricPoint,
    ModelInfo,
    StoreError,
)
from .readonly import open_read_only
from .registry import apply_registry
from .schema import SCHEMA_VERSION
from .sqlite import Store

__all__ = [
    "DEFAULT_STORE",
    "SCHEMA_VERSION",
    "DeploymentResultInfo",
    "DeviceInfo",
    "DeviceRefused",
    "FleetStore",
    "MetricPoint",
    "ModelInfo",
    "Store",
    "StoreError",
    "apply_registry",
    "open_read_only",
]
