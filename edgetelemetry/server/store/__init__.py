"""The endpoint's store: one interface (``base.FleetStore``), two backends (``sqlite.Store``,
the default; ``postgresql.PostgresStore``), picked by ``open_store(target)`` from the target's
scheme; versioned migrations (``migrations/``), retention (``retention``, ``compaction``) and
the registry document applied to any store (``registry``).  docs/store.md describes it all."""

from __future__ import annotations

from .base import (
    DEFAULT_KEEP_HOURLY,
    DEFAULT_KEEP_RAW,
    DEFAULT_STORE,
    CompactionReport,
    DeploymentResultInfo,
    DeviceInfo,
    DeviceRefused,
    FleetStore,
    LatestPoint,
    MetricPoint,
    ModelInfo,
    RollupPoint,
    SchemaOutOfDate,
    StoreError,
)
from .migrations import SCHEMA_VERSION
from .open import is_postgresql, open_read_only, open_store
from .registry import apply_registry
from .retention import Compactor
from .sqlite import Store

__all__ = [
    "DEFAULT_KEEP_HOURLY",
    "DEFAULT_KEEP_RAW",
    "DEFAULT_STORE",
    "SCHEMA_VERSION",
    "CompactionReport",
    "Compactor",
    "DeploymentResultInfo",
    "DeviceInfo",
    "DeviceRefused",
    "FleetStore",
    "LatestPoint",
    "MetricPoint",
    "ModelInfo",
    "RollupPoint",
    "SchemaOutOfDate",
    "Store",
    "StoreError",
    "apply_registry",
    "is_postgresql",
    "open_read_only",
    "open_store",
]
