"""Build ``SendHeartbeat`` parameters from snapshots.

``build_heartbeat`` is a pure function: no I/O, no clock reads, no randomness.  Every time in
the payload comes from the snapshots' wall times or from the persisted ``ModelState``, so the
same inputs always give the same request, and a backlog sent a day late still carries the
times its windows closed.  The mapping is documented in ``docs/heartbeat-mapping.md``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from .._version import __version__
from ..recording.naming import STAT_SUFFIXES, heartbeat_metric_name
from ..snapshot import SeriesSnapshot, Snapshot
from .agent_metrics import NAME_CLASHES, window_seq_metric
from .validate import HeartbeatValidationError, validate_input, validate_send_heartbeat

__all__ = [
    "DEFAULT_DIMENSION",
    "DeviceIdentity",
    "ModelState",
    "PayloadOptions",
    "build_heartbeat",
    "sanitize_agent_version",
]

# The Dimension of a series recorded without one (EdgeMetric.Dimension cannot be empty).
DEFAULT_DIMENSION = "all"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_QUANTILES = {s: int(s[1:]) / 100 for s in STAT_SUFFIXES if re.fullmatch(r"p\d\d", s)}
_NO_METRICS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True)
class DeviceIdentity:
    """The device and fleet names every request carries, checked against the service rules."""

    device_name: str
    fleet_name: str

    def __post_init__(self) -> None:
        validate_input(
            "GetDeviceRegistration",
            {"DeviceName": self.device_name, "DeviceFleetName": self.fleet_name},
        )


@dataclass(frozen=True)
class ModelState:
    """What the agent persisted about a model between heartbeats (wall-clock ns, or None)."""

    latest_inference_ns: int | None = None
    latest_sample_ns: int | None = None


@dataclass(frozen=True)
class PayloadOptions:
    """``stats``: which aggregates of each series to report, in this order."""

    default_dimension: str = DEFAULT_DIMENSION
    stats: tuple[str, ...] = STAT_SUFFIXES

    def __post_init__(self) -> None:
        unknown = [s for s in self.stats if s not in STAT_SUFFIXES]
        if unknown or len(set(self.stats)) != len(self.stats):
            raise ValueError(
                f"stats {self.stats!r} must be distinct, from {', '.join(STAT_SUFFIXES)}"
            )


def sanitize_agent_version(version: str) -> str:
    """A package version as a valid AgentVersion: ``1.0.0-rc1`` -> ``1.0.0_rc1``."""
    return re.sub(r"[^a-zA-Z0-9 _.]", "_", version)[:64]


def build_heartbeat(
    snapshots: Sequence[Snapshot],
    identity: DeviceIdentity,
    *,
    agent_metrics: Mapping[str, float] = _NO_METRICS,
    model_state: Mapping[tuple[str, str], ModelState] | None = None,
    deployment_result: Mapping[str, Any] | None = None,
    agent_version: str | None = None,
    options: PayloadOptions = PayloadOptions(),
    window_seq: bool = False,
) -> dict[str, Any]:
    """The keyword arguments of ``client.send_heartbeat(**kwargs)`` for these snapshots.

    Each snapshot keeps its own window: its metrics carry its end time, so a backlog becomes
    one request with several points per metric (``split_heartbeat`` cuts it to size).  Merge
    snapshots first (``Snapshot.merge``) to report them as one window.  A snapshot lists the
    series with activity in its window; a model in ``model_state`` with none gets an entry
    with its ``LatestInference`` and no ``ModelMetrics``.  ``agent_version`` is sent as
    given; by default it is this package's version made valid.  ``window_seq`` adds the last
    snapshot's ``window-seq`` AgentMetric (``agent_metrics.window_seq_metric``), after
    ``agent_metrics``.

    Two series of one model that would report under one ``MetricName`` and ``Dimension``
    (``latency`` in ``ms`` and ``latency-ms`` without a unit, from snapshots a registry did
    not check, or a dimension spelt like the default one) are never both sent: the series
    whose (metric, unit, dimension) sorts first keeps the name, the others are left out and
    counted in the ``series-name-clashes`` AgentMetric.  The result always passes
    ``validate_send_heartbeat``; otherwise ``HeartbeatValidationError`` says where.
    """
    states = model_state or {}
    groups: dict[tuple[str, str], list[tuple[Snapshot, SeriesSnapshot]]] = {
        key: [] for key in states
    }
    for snap in snapshots:
        for series in snap.series:
            groups.setdefault((series.model, series.version), []).append((snap, series))
    clashes = 0
    for key, items in groups.items():
        groups[key], left_out = _without_clashes(items, options)
        clashes += left_out

    params: dict[str, Any] = {
        "AgentVersion": (
            sanitize_agent_version(__version__) if agent_version is None else agent_version
        ),
        "DeviceName": identity.device_name,
        "DeviceFleetName": identity.fleet_name,
        "Models": [
            _model_entry(key, groups[key], states.get(key), options, f"Models[{i}]")
            for i, key in enumerate(sorted(groups))
        ],
    }
    if clashes:
        agent_metrics = {**agent_metrics, NAME_CLASHES: float(clashes)}
    if agent_metrics or (window_seq and snapshots):
        latest_end = max((s.end_wall_ns for s in snapshots), default=None)
        when = None if latest_end is None else _timestamp(latest_end, "AgentMetrics[0].Timestamp")
        agent: list[dict[str, Any]] = []
        for name, value in sorted(agent_metrics.items()):
            metric = {"MetricName": name, "Dimension": options.default_dimension, "Value": value}
            if when is not None:
                metric["Timestamp"] = when
            agent.append(metric)
        seq = window_seq_metric(snapshots[-1], when) if window_seq and snapshots else None
        if seq is not None:
            agent.append(seq)
        if agent:
            params["AgentMetrics"] = agent
    if deployment_result is not None:
        params["DeploymentResult"] = copy.deepcopy(dict(deployment_result))
    validate_send_heartbeat(params)
    return params


def _without_clashes(
    items: list[tuple[Snapshot, SeriesSnapshot]], options: PayloadOptions
) -> tuple[list[tuple[Snapshot, SeriesSnapshot]], int]:
    """One model's series without those whose metric names and dimension another series
    claims first (sorted by metric, unit, dimension: the same choice whatever the order of
    snapshots and series), and how many series entries were left out."""
    owner: dict[tuple[str, str], tuple[str, str, str]] = {}
    for _, series in items:
        reported = _reported_as(series, options)
        mine = (series.metric, series.unit or "", series.dimension or "")
        if reported not in owner or mine < owner[reported]:
            owner[reported] = mine
    kept = [
        (snap, series)
        for snap, series in items
        if owner[_reported_as(series, options)]
        == (series.metric, series.unit or "", series.dimension or "")
    ]
    return kept, len(items) - len(kept)


def _reported_as(series: SeriesSnapshot, options: PayloadOptions) -> tuple[str, str]:
    """(display name, Dimension): the EdgeMetric names a series' statistics take."""
    name = "-".join(part for part in (series.metric, series.unit) if part)
    dimension = options.default_dimension if series.dimension is None else series.dimension
    return name, dimension


def _model_entry(
    key: tuple[str, str],
    items: list[tuple[Snapshot, SeriesSnapshot]],
    state: ModelState | None,
    options: PayloadOptions,
    path: str,
) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = []
    for snap, series in items:
        when = _timestamp(snap.end_wall_ns, f"{path}.ModelMetrics[{len(metrics)}].Timestamp")
        dimension = options.default_dimension if series.dimension is None else series.dimension
        for stat in options.stats:
            value = _stat_value(series, stat)
            if value is None:
                continue
            mpath = f"{path}.ModelMetrics[{len(metrics)}]"
            metrics.append(
                {
                    "MetricName": _metric_name(series, stat, mpath),
                    "Dimension": dimension,
                    "Value": value,
                    "Timestamp": when,
                }
            )

    inference_ns = [s.last_wall_ns for _, s in items if s.last_wall_ns is not None]
    if state is not None and state.latest_inference_ns is not None:
        inference_ns.append(state.latest_inference_ns)
    entry: dict[str, Any] = {"ModelName": key[0], "ModelVersion": key[1]}
    if state is not None and state.latest_sample_ns is not None:
        entry["LatestSampleTime"] = _timestamp(state.latest_sample_ns, f"{path}.LatestSampleTime")
    if inference_ns:
        entry["LatestInference"] = _timestamp(max(inference_ns), f"{path}.LatestInference")
    entry["ModelMetrics"] = metrics
    return entry


def _stat_value(series: SeriesSnapshot, stat: str) -> float | None:
    """The value of one aggregate, or None where an empty series has none."""
    if stat == "count":
        return float(series.count)
    if stat == "sum":
        return series.sum
    if stat == "rejected":
        return float(sum(series.rejected.values()))
    if stat == "dropped":
        return float(sum(series.dropped.values()))
    if series.count == 0:
        return None
    if stat == "min":
        return series.min
    if stat == "max":
        return series.max
    if stat == "mean":
        return series.mean
    return series.quantile(_QUANTILES[stat])


def _metric_name(series: SeriesSnapshot, stat: str, path: str) -> str:
    try:
        return heartbeat_metric_name(series.metric, series.unit, stat)
    except ValueError as exc:
        # Only a length can fail here; names that skipped the naming rules (a foreign or
        # hand-made snapshot) get the same path/rule error as any other bad field.
        name = "-".join(part for part in (series.metric, series.unit, stat) if part)
        rule = "min_length" if len(name) < 4 else "max_length"
        raise HeartbeatValidationError(f"{path}.MetricName", rule, name, str(exc)) from exc


def _timestamp(ns: int, path: str) -> datetime:
    """Wall-clock ns as an aware UTC datetime (truncated to µs), exactly, without floats."""
    try:
        return _EPOCH + timedelta(microseconds=ns // 1000)
    except OverflowError as exc:
        rule = "max_timestamp" if ns > 0 else "min_timestamp"
        raise HeartbeatValidationError(path, rule, ns, "is outside the datetime range") from exc
