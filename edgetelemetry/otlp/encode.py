"""Snapshots to an OTLP ``ExportMetricsServiceRequest``: a pure function of its inputs.

Built with the ``opentelemetry-proto`` package's message classes, imported on the first call
(the ``otlp`` extra), so the core install does not need them.  The mapping (docs/otlp.md):

- resource: ``service.name`` = ``edgetelemetry``, ``service.version`` = the agent's version,
  ``service.instance.id`` and ``device.id`` = the device name, ``edgetelemetry.fleet``;
- one ``ExponentialHistogram`` metric per (series metric name, unit), DELTA over the window,
  one point per (model, version, dimension) with attributes ``model``, ``model.version`` and
  ``dimension`` (when the series has one); count, min and max exact, sum exact and present
  unless the series holds negative values (OTLP's rule); buckets per ``histogram``;
- ``edgetelemetry.dropped`` and ``edgetelemetry.rejected``: monotonic DELTA sums per series and
  reason;
- the agent's figures (``agent_metrics``: AgentMetrics names) as gauges
  ``edgetelemetry.agent.<name with - as _>``, plus ``edgetelemetry.agent.window_seq`` (the
  recorder's window number, attribute ``recorder.id``), all at the window's end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..snapshot import SeriesSnapshot, Snapshot
from .histogram import auto_scale, exponential_mapping

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

__all__ = [
    "AGENT_PREFIX",
    "SCOPE_NAME",
    "OtlpIdentity",
    "OtlpMissingError",
    "agent_metric_name",
    "build_metrics_request",
    "request_json",
]

SCOPE_NAME = "edgetelemetry"
AGENT_PREFIX = "edgetelemetry.agent."
_NO_METRICS: Mapping[str, float] = MappingProxyType({})
_INSTALL_HINT = "pip install 'edgetelemetry[otlp]' (the opentelemetry-proto package)"


class OtlpMissingError(ImportError):
    """The ``opentelemetry-proto`` package is not installed."""


@dataclass(frozen=True)
class OtlpIdentity:
    """Who sends: the resource every request carries."""

    device_name: str
    fleet_name: str
    agent_version: str | None = None


def agent_metric_name(name: str) -> str:
    """``spool-records`` -> ``edgetelemetry.agent.spool_records``."""
    return AGENT_PREFIX + name.replace("-", "_")


def build_metrics_request(
    snapshots: Sequence[Snapshot],
    identity: OtlpIdentity,
    *,
    agent_metrics: Mapping[str, float] = _NO_METRICS,
    scale: int | None = None,
) -> ExportMetricsServiceRequest:
    """One request for ``snapshots`` (each keeps its own window) and the agent's figures.

    ``scale`` is the exponential histograms' OTLP scale; ``None`` picks ``auto_scale`` of each
    snapshot's layout.  ``agent_metrics`` are stamped at the last snapshot's end (and dropped
    when there is no snapshot to take a time from).
    """
    pb = _proto()
    request = pb.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(_attributes({
        "service.name": "edgetelemetry",
        "service.version": identity.agent_version or __version__,
        "service.instance.id": identity.device_name,
        "device.id": identity.device_name,
        "edgetelemetry.fleet": identity.fleet_name,
    }))
    sm = rm.scope_metrics.add()
    sm.scope.name = SCOPE_NAME
    sm.scope.version = __version__
    histograms: dict[tuple[str, str], Metric] = {}
    sums: dict[str, Metric] = {}
    for snap in snapshots:
        mapping = exponential_mapping(snap.layout, auto_scale(snap.layout)
                                      if scale is None else scale)
        for series in snap.series:
            key = (series.metric, series.unit or "")
            metric = histograms.get(key)
            if metric is None:
                metric = histograms[key] = sm.metrics.add(name=series.metric,
                                                          unit=series.unit or "")
                metric.exponential_histogram.aggregation_temporality = pb.DELTA
            point = metric.exponential_histogram.data_points.add(
                start_time_unix_nano=_ns(snap.start_wall_ns), time_unix_nano=_ns(snap.end_wall_ns),
                count=series.count, scale=mapping.scale, zero_count=series.zero,
                zero_threshold=mapping.zero_threshold)
            point.attributes.extend(_attributes(_series_attributes(series)))
            if series.count:
                point.min, point.max = series.min, series.max  # type: ignore[assignment]
            if not series.neg and (series.min is None or series.min >= 0):
                point.sum = series.sum
            for counts, side in ((series.pos, point.positive), (series.neg, point.negative)):
                offset, dense = mapping.dense(counts)
                if dense:
                    side.offset = offset
                    side.bucket_counts.extend(dense)
            for kind, reasons in (("dropped", series.dropped), ("rejected", series.rejected)):
                for reason, n in sorted(reasons.items()):
                    if not n:
                        continue
                    if kind not in sums:
                        sums[kind] = _sum_metric(sm, pb, f"edgetelemetry.{kind}")
                    p = sums[kind].sum.data_points.add(
                        start_time_unix_nano=_ns(snap.start_wall_ns),
                        time_unix_nano=_ns(snap.end_wall_ns), as_int=n)
                    p.attributes.extend(_attributes(
                        {**_series_attributes(series), "metric": series.metric,
                         "reason": reason}))
    if snapshots:
        _agent_gauges(sm, snapshots[-1], agent_metrics)
    return request


def request_json(request: ExportMetricsServiceRequest) -> bytes:
    """The OTLP/JSON form of ``request`` (lowerCamelCase names, enums as integers, 64-bit
    integers as decimal strings), compact UTF-8."""
    from google.protobuf.json_format import MessageToDict

    doc = MessageToDict(request, use_integers_for_enums=True)
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


# -- helpers ----------------------------------------------------------------------------------

class _Proto:
    """The message classes and enums used, looked up once."""

    def __init__(self) -> None:
        try:
            from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
            from opentelemetry.proto.common.v1 import common_pb2
            from opentelemetry.proto.metrics.v1 import metrics_pb2
        except ImportError as exc:
            raise OtlpMissingError(f"OTLP needs {_INSTALL_HINT}: {exc}") from exc
        self.ExportMetricsServiceRequest = metrics_service_pb2.ExportMetricsServiceRequest
        self.KeyValue = common_pb2.KeyValue
        self.DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


_PROTO: list[_Proto] = []


def _proto() -> _Proto:
    if not _PROTO:
        _PROTO.append(_Proto())
    return _PROTO[0]


def _ns(wall_ns: int) -> int:
    return max(0, wall_ns)  # fixed64: a (never sent) pre-1970 stamp cannot be negative


def _attributes(values: Mapping[str, Any]) -> list[KeyValue]:
    key_value = _proto().KeyValue
    out = []
    for key, value in values.items():
        kv = key_value(key=key)
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = str(value)
        out.append(kv)
    return out


def _series_attributes(series: SeriesSnapshot) -> dict[str, str]:
    attrs = {"model": series.model, "model.version": series.version}
    if series.dimension is not None:
        attrs["dimension"] = series.dimension
    return attrs


def _sum_metric(sm: Any, pb: _Proto, name: str) -> Metric:
    metric: Metric = sm.metrics.add(name=name, unit="{value}")
    metric.sum.aggregation_temporality = pb.DELTA
    metric.sum.is_monotonic = True
    return metric


def _agent_gauges(sm: Any, snap: Snapshot, figures: Mapping[str, float]) -> None:
    when = _ns(snap.end_wall_ns)
    src = snap.sources[-1]
    values: list[tuple[str, float | int, dict[str, str]]] = [
        (agent_metric_name("window-seq"), src.seq_last, {"recorder.id": src.recorder_id})]
    values += [(agent_metric_name(name), value, {}) for name, value in sorted(figures.items())]
    for name, value, attrs in values:
        metric: Metric = sm.metrics.add(name=name)
        point = metric.gauge.data_points.add(time_unix_nano=when)
        if isinstance(value, int):
            point.as_int = value
        else:
            point.as_double = float(value)
        point.attributes.extend(_attributes(attrs))
