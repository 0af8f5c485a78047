"""Snapshots to OpenTelemetry (OTLP) metrics: pure, like ``heartbeat`` beside it.

``histogram`` places our log2-mantissa buckets on OTLP's base-2 exponential scale (integer
arithmetic, no protobuf); ``encode`` builds an ``ExportMetricsServiceRequest`` with the
``opentelemetry-proto`` package's classes (imported when first used: the ``otlp`` extra) and
its OTLP/JSON form.  Nothing here sends anything or reads a clock.  See ``docs/otlp.md``.
"""

from __future__ import annotations

from .encode import (
    AGENT_PREFIX,
    SCOPE_NAME,
    OtlpIdentity,
    OtlpMissingError,
    agent_metric_name,
    build_metrics_request,
    request_json,
)
from .histogram import (
    MAX_SCALE,
    MIN_SCALE,
    ExponentialMapping,
    aligned_scale,
    auto_scale,
    exponential_mapping,
)

__all__ = [
    "AGENT_PREFIX",
    "SCOPE_NAME",
    "OtlpIdentity",
    "OtlpMissingError",
    "agent_metric_name",
    "build_metrics_request",
    "request_json",
    "MAX_SCALE",
    "MIN_SCALE",
    "ExponentialMapping",
    "aligned_scale",
    "auto_scale",
    "exponential_mapping",
]
