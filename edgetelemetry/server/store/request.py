"""What a ``SendHeartbeat`` request puts in the store, read from the request alone (pure).

Every backend stores the same thing: the points of the heartbeat (each naming its series:
agent or model, model, version, metric name, dimension), the models it listed with their times,
its deployment result, and its resend key (docs/store.md, "Resends"):

A request built from an agent's spool record carries exactly one ``spool-seq`` AgentMetric whose
Dimension is ``<spool_id>/<part>/<parts>`` and whose Value is the record's sequence number.
``(DeviceName, Dimension, Value)`` names the request: a resend after a crash carries the same
key, and the store keeps the first one only.  Requests without exactly one ``spool-seq`` metric
(other clients, status heartbeats) have no key and are always stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["SPOOL_SEQ", "Heartbeat", "ModelReport", "SeriesKey", "num", "parse_heartbeat"]

SPOOL_SEQ = "spool-seq"

# (agent, model, version, metric, dimension): agent is 1 for AgentMetrics (model and version
# are then ''), 0 for a model's ModelMetrics ('' for a model sent without name or version)
SeriesKey = tuple[int, str, str, str, str]


@dataclass(frozen=True)
class ModelReport:
    name: str
    version: str
    latest_sample_time: float | None
    latest_inference: float | None


@dataclass(frozen=True)
class Heartbeat:
    """One request, as stored: ``ts`` is its earliest metric time (``received_at`` when it has
    no metric) and ``span`` how far its latest metric time lies after ``ts``."""

    device: str
    fleet: str
    agent_version: str
    received_at: float
    ts: float
    span: float
    points: tuple[tuple[SeriesKey, float | None, float], ...]
    models: tuple[ModelReport, ...]
    deployment_result: tuple[Any, ...] | None  # the columns of deployment_results
    spool_key: tuple[str, float] | None  # (spool-seq Dimension, spool-seq Value)


def num(value: Any) -> float | None:
    """A JSON number (or a datetime) as a float, or None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float(value)


def parse_heartbeat(request: Mapping[str, Any], received_at: float) -> Heartbeat:
    """The stored form of a validated ``SendHeartbeat`` request (JSON-decoded)."""
    points: list[tuple[SeriesKey, float | None, float]] = []
    seqs: list[tuple[str, float | None]] = []
    for metric in request.get("AgentMetrics") or ():
        key: SeriesKey = (1, "", "", metric.get("MetricName") or "", metric.get("Dimension") or "")
        value = num(metric.get("Value"))
        points.append((key, value, _time(metric, received_at)))
        if key[3] == SPOOL_SEQ:
            seqs.append((key[4], value))
    models: list[ModelReport] = []
    for model in request.get("Models") or ():
        name = model.get("ModelName") or ""
        version = model.get("ModelVersion") or ""
        models.append(
            ModelReport(
                name, version, num(model.get("LatestSampleTime")), num(model.get("LatestInference"))
            )
        )
        for metric in model.get("ModelMetrics") or ():
            key = (0, name, version, metric.get("MetricName") or "", metric.get("Dimension") or "")
            points.append((key, num(metric.get("Value")), _time(metric, received_at)))
    times = [ts for _, _, ts in points]
    ts = min(times, default=received_at)
    result = request.get("DeploymentResult")
    deployment = None
    if result:
        deployment = (
            result.get("DeploymentName"),
            result.get("DeploymentStatus"),
            result.get("DeploymentStatusMessage"),
            num(result.get("DeploymentStartTime")),
            num(result.get("DeploymentEndTime")),
            json.dumps(result.get("DeploymentModels") or []),
        )
    spool_key = None
    if len(seqs) == 1 and seqs[0][1] is not None:
        spool_key = (seqs[0][0], seqs[0][1])
    return Heartbeat(
        device=request["DeviceName"],
        fleet=request["DeviceFleetName"],
        agent_version=request["AgentVersion"],
        received_at=received_at,
        ts=ts,
        span=max(times, default=ts) - ts,
        points=tuple(points),
        models=tuple(models),
        deployment_result=deployment,
        spool_key=spool_key,
    )


def _time(metric: Mapping[str, Any], received_at: float) -> float:
    ts = num(metric.get("Timestamp"))
    return received_at if ts is None else ts
