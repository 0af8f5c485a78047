"""Alert rules and their evaluation: a pure function of what the store holds and ``now``.

Rules come from the endpoint's alert configuration (``config.load_alert_config``).  Kinds:

=====================  ========================================================================
``device_silent``      a registered device whose latest heartbeat is older than
                       ``intervals`` x ``heartbeat_interval_s`` (or that never sent one, once
                       registered that long)
``p99_above``          the latest window's ``<metric>-p99`` of a model series above ``threshold``
                       (``metric``: a base name such as ``latency-ms``; ``*`` for every one)
``drops``              the latest window's ``-dropped`` of a model series above 0
``dead_letters``       the agent metric ``dead-letters`` above 0
``deployment_failed``  the device's latest deployment result has status ``FAIL``
=====================  ========================================================================

An alert is identified by its rule and the labels of what it is about (device, and model,
version, metric, dimension where they apply): the same alert from one pass to the next is the
same key, so it fires once and resolves once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..store import DeploymentResultInfo, DeviceInfo, LatestPoint

__all__ = ["KINDS", "Alert", "FleetFacts", "Rule", "evaluate"]

Kind = Literal["device_silent", "p99_above", "drops", "dead_letters", "deployment_failed"]
KINDS: tuple[str, ...] = (
    "device_silent",
    "p99_above",
    "drops",
    "dead_letters",
    "deployment_failed",
)
DEAD_LETTERS = "dead-letters"


@dataclass(frozen=True)
class Rule:
    name: str
    kind: Kind
    severity: str = "warning"
    heartbeat_interval_s: float = 60.0  # device_silent
    intervals: int = 3  # device_silent
    metric: str = "*"  # p99_above: a base name or "*"
    threshold: float = 0.0  # p99_above

    @property
    def silent_after(self) -> float:
        return self.heartbeat_interval_s * self.intervals


@dataclass(frozen=True)
class Alert:
    rule: str
    kind: str
    severity: str
    labels: tuple[tuple[str, str], ...]  # (name, value) sorted: device, fleet, model...
    value: float | None
    summary: str
    since: float  # server time the alert was first seen firing

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (self.rule, self.labels)

    def to_json(self) -> dict[str, Any]:
        value = self.value if self.value is None or math.isfinite(self.value) else None
        return {
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "labels": dict(self.labels),
            "value": value,
            "summary": self.summary,
            "since": self.since,
        }


@dataclass(frozen=True)
class FleetFacts:
    """What one evaluation pass read from the store (four queries for the whole fleet)."""

    devices: list[DeviceInfo]
    model_points: list[LatestPoint]
    agent_points: list[LatestPoint]
    deployments: Mapping[str, DeploymentResultInfo] = field(default_factory=dict)


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _point_labels(p: LatestPoint, fleet: str, base: str) -> tuple[tuple[str, str], ...]:
    return _labels(
        device=p.device,
        fleet=fleet,
        model=p.model,
        version=p.version,
        metric=base,
        dimension=p.dimension,
    )


def _for_rule(
    rule: Rule, facts: FleetFacts, fleet_of: Mapping[str, str], now: float
) -> Iterable[tuple[tuple[tuple[str, str], ...], float | None, str]]:
    if rule.kind == "device_silent":
        for d in facts.devices:
            if not d.registered:
                continue
            last = d.last_heartbeat if d.last_heartbeat is not None else d.registered_at
            if now - last > rule.silent_after:
                age = now - last
                said = (
                    "has not sent a heartbeat"
                    if d.last_heartbeat is None
                    else "has sent no heartbeat"
                )
                yield (
                    _labels(device=d.name, fleet=d.fleet),
                    age,
                    f"{d.name} {said} for {age:.0f} s (> {rule.silent_after:.0f} s)",
                )
    elif rule.kind in ("p99_above", "drops"):
        suffix = "-p99" if rule.kind == "p99_above" else "-dropped"
        for p in facts.model_points:
            fleet = fleet_of.get(p.device)
            if fleet is None or not p.metric.endswith(suffix) or p.value is None:
                continue
            base = p.metric[: -len(suffix)]
            if rule.kind == "p99_above":
                if (rule.metric != "*" and base != rule.metric) or not p.value > rule.threshold:
                    continue
                text = (
                    f"p99 {base} of {p.model} {p.version} on {p.device} is {p.value:g} "
                    f"(> {rule.threshold:g})"
                )
            else:
                if not p.value > 0:
                    continue
                text = f"{p.device} dropped {p.value:g} values of {p.model} {p.version} {base}"
            yield _point_labels(p, fleet, base), p.value, text
    elif rule.kind == "dead_letters":
        for p in facts.agent_points:
            fleet = fleet_of.get(p.device)
            if fleet is None or p.metric != DEAD_LETTERS or p.value is None or not p.value > 0:
                continue
            yield (
                _labels(device=p.device, fleet=fleet),
                p.value,
                f"{p.device} holds {p.value:g} dead-lettered records",
            )
    elif rule.kind == "deployment_failed":
        for device, result in sorted(facts.deployments.items()):
            fleet = fleet_of.get(device)
            if fleet is None or result.deployment_status != "FAIL":
                continue
            name = result.deployment_name or "?"
            message = (result.status_message or "")[:200]
            yield (
                _labels(device=device, fleet=fleet, deployment=name),
                None,
                f"deployment {name} failed on {device}: {message}".rstrip(": "),
            )


def evaluate(
    rules: Iterable[Rule],
    facts: FleetFacts,
    now: float,
    firing: Mapping[tuple[str, tuple[tuple[str, str], ...]], Alert] | None = None,
    limit: int | None = None,
) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], Alert], int]:
    """The alerts firing at ``now``, keyed by ``Alert.key``, and how many were left out past
    ``limit``.  An alert already in ``firing`` keeps its ``since``."""
    previous = firing or {}
    fleet_of = {d.name: d.fleet for d in facts.devices if d.registered}
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Alert] = {}
    over = 0
    for rule in rules:
        for labels, value, summary in _for_rule(rule, facts, fleet_of, now):
            key = (rule.name, labels)
            if limit is not None and len(out) >= limit:
                over += 1
                continue
            since = previous[key].since if key in previous else now
            out[key] = Alert(rule.name, rule.kind, rule.severity, labels, value, summary, since)
    return out, over
