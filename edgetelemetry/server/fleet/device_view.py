"""What the fleet page needs beyond the status: one page of devices with their drops, backlog,
dead letters and latest deployment (``device_page``), and every metric one device's models
report over a time range, by version (``device_metrics``).

Backlog is the agent metric ``spool-records`` (records written to the device's spool and not yet
acknowledged), dead letters ``dead-letters``, drops the sum of the latest window's ``-dropped``
over the device's model series: all as the latest heartbeat carried them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..store import FleetStore
from .queries import DEFAULT_OFFLINE_AFTER, fleet_status

__all__ = ["BACKLOG", "DEAD_LETTERS", "MetricTrack", "device_metrics", "device_page"]

BACKLOG = "spool-records"
DEAD_LETTERS = "dead-letters"
_DROPPED = "-dropped"
STATES = ("connected", "offline", "never", "deregistered")


def device_page(
    store: FleetStore,
    *,
    now: float,
    offset: int = 0,
    limit: int = 50,
    offline_after: float = DEFAULT_OFFLINE_AFTER,
    fleet: str | None = None,
    device: str | None = None,
    search: str = "",
    state: str = "",
) -> dict[str, Any]:
    """``fleet_status(...).to_json()`` with ``devices`` cut to ``[offset, offset + limit)`` of
    those matching ``search`` (a part of the name) and ``state``, ``total`` (how many match) and,
    per device on the page, ``drops``, ``backlog``, ``dead_letters`` and ``deployment``."""
    if state and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    doc = fleet_status(
        store, now=now, offline_after=offline_after, fleet=fleet, device=device
    ).to_json()
    needle = search.lower()
    matching = [
        d
        for d in doc["devices"]
        if (not needle or needle in d["name"].lower()) and (not state or d["state"] == state)
    ]
    page = matching[offset : offset + limit]
    names = {d["name"] for d in page}
    drops: dict[str, float] = {}
    if names:
        for p in store.latest_by_prefix("", fleet, [_DROPPED]):
            if p.device in names and p.value is not None:
                drops[p.device] = drops.get(p.device, 0.0) + p.value
    agent: dict[tuple[str, str], float | None] = {}
    if len(names) == 1:
        points = store.latest_agent_points(fleet, [BACKLOG, DEAD_LETTERS], device=next(iter(names)))
    else:
        points = store.latest_agent_points(fleet, [BACKLOG, DEAD_LETTERS]) if names else []
    for p in points:
        if p.device in names:
            agent[(p.device, p.metric)] = p.value
    deployments = store.latest_deployment_results(fleet) if names else {}
    for d in page:
        name = d["name"]
        d["drops"] = drops.get(name)
        d["backlog"] = agent.get((name, BACKLOG))
        d["dead_letters"] = agent.get((name, DEAD_LETTERS))
        result = deployments.get(name)
        d["deployment"] = (
            None
            if result is None
            else {
                "name": result.deployment_name,
                "status": result.deployment_status,
                "message": result.status_message,
                "received_at": result.received_at,
            }
        )
    doc["devices"] = page
    doc["total"] = len(matching)
    doc["offset"] = offset
    doc["limit"] = limit
    return doc


@dataclass(frozen=True)
class MetricTrack:
    """One metric of one model over time: ``points`` are ``(timestamp, value, version)`` oldest
    first; hours retention rolled up come as one point each, before ``hourly_until``."""

    model: str
    metric: str  # the full name, e.g. ``latency-ms-p99``
    base: str  # ``latency-ms``
    stat: str  # ``p99``; "" for a gauge
    dimension: str
    points: list[tuple[float, float, str]]
    truncated: bool
    hourly_until: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "metric": self.metric,
            "base": self.base,
            "stat": self.stat,
            "dimension": self.dimension,
            "truncated": self.truncated,
            "hourly_until": self.hourly_until,
            "versions": sorted({v for _, _, v in self.points}),
            "points": [[t, v, ver] for t, v, ver in self.points],
        }


_STATS = ("count", "sum", "min", "max", "mean", "p50", "p90", "p95", "p99", "dropped", "rejected")


def _split(name: str) -> tuple[str, str]:
    base, sep, stat = name.rpartition("-")
    return (base, stat) if sep and base and stat in _STATS else (name, "")


def device_metrics(
    store: FleetStore,
    device: str,
    *,
    since: float | None = None,
    until: float | None = None,
    max_points: int = 1000,
    models: Sequence[str] = (),
) -> list[MetricTrack]:
    """Every metric ``device``'s models (or ``models``) report between ``since`` and ``until``
    (metric timestamps): one track per (model, metric name, dimension), all versions in it (each
    point names its version).  More than ``max_points`` keeps the newest and sets ``truncated``."""
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    out: list[MetricTrack] = []
    for model in sorted(set(models) or {m.name for m in store.models(device)}):
        for name in store.metric_names(device, model, ""):
            per_dim: dict[str, list[tuple[float, float, str]]] = {}
            hourly: dict[str, float] = {}
            for hour in store.metric_rollups(device, model, name, since=since, until=until):
                if hour.value is None or not math.isfinite(hour.value):
                    continue
                end = hour.hour + 3600
                hourly[hour.dimension] = max(end, hourly.get(hour.dimension, end))
                per_dim.setdefault(hour.dimension, []).append(
                    (hour.hour, hour.value, hour.model_version or "")
                )
            for p in store.metric_series(device, model, name, since=since, until=until):
                if p.value is None:
                    continue
                per_dim.setdefault(p.dimension, []).append(
                    (p.timestamp, p.value, p.model_version or "")
                )
            base, stat = _split(name)
            for dimension in sorted(per_dim):
                points = sorted(per_dim[dimension], key=lambda pt: pt[0])
                out.append(
                    MetricTrack(
                        model,
                        name,
                        base,
                        stat,
                        dimension,
                        points[-max_points:],
                        len(points) > max_points,
                        hourly.get(dimension),
                    )
                )
    return out
