"""Names that survive the trip to a heartbeat.

Every series name ends up in a ``SendHeartbeat`` request, so it is checked when a handle is
created, not when the heartbeat is refused days later.  The rules are the service model's
(``botocore`` ``sagemaker-edge``), tightened where the fleet reports were stricter (model names
up to 63 characters, versions up to 30); ``tests/test_naming.py`` checks them against the
model shipped with botocore so that a model update that changes a rule is caught.

The heartbeat metric name of a statistic is ``<metric>-<unit>-<stat>`` (``latency-ms-p99``),
or ``<metric>-<stat>`` without a unit; see ``heartbeat_metric_name``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "NameRule",
    "MODEL_RULE",
    "VERSION_RULE",
    "METRIC_RULE",
    "DIMENSION_RULE",
    "UNIT_RULE",
    "AGENT_METRIC_RULE",
    "STAT_SUFFIXES",
    "heartbeat_metric_name",
    "check_series_names",
]

# Statistic suffixes the payload builder may append to a metric name (longest one bounds the
# metric name's length).  Order is the order they appear in a heartbeat.
STAT_SUFFIXES: tuple[str, ...] = (
    "count",
    "sum",
    "min",
    "max",
    "mean",
    "p50",
    "p90",
    "p95",
    "p99",
    "rejected",
    "dropped",
)

_EDGE_METRIC_NAME_MAX = 100
_EDGE_METRIC_NAME_MIN = 4


@dataclass(frozen=True)
class NameRule:
    """One field's rule: length bounds and a full-match pattern, with a passing example."""

    field: str
    min_len: int
    max_len: int
    pattern: str
    example: str
    hint: str

    def problem(self, value: object) -> str | None:
        """Why ``value`` breaks the rule, or None when it passes."""
        if not isinstance(value, str):
            return f"{self.field} must be a str, got {type(value).__name__}"
        if not self.min_len <= len(value) <= self.max_len:
            return (
                f"{self.field} {value!r} is {len(value)} characters; it must be "
                f"{self.min_len}-{self.max_len} (for example {self.example!r})"
            )
        if re.fullmatch(self.pattern, value) is None:
            return (
                f"{self.field} {value!r} does not match {self.pattern}: {self.hint} "
                f"(for example {self.example!r})"
            )
        return None


_ALNUM_HYPHEN = r"[a-zA-Z0-9](-*[a-zA-Z0-9])*"

MODEL_RULE = NameRule(
    field="model",
    min_len=4,
    max_len=63,
    pattern=_ALNUM_HYPHEN,
    example="resnet18",
    hint="letters, digits and inner hyphens only; no underscore, dot or space",
)
VERSION_RULE = NameRule(
    field="version",
    min_len=1,
    max_len=30,
    pattern=r"[a-zA-Z0-9\ \_\.]+",
    example="1.0",
    hint="letters, digits, space, underscore and dot only; no hyphen",
)
DIMENSION_RULE = NameRule(
    field="dimension",
    min_len=1,
    max_len=1000,
    pattern=r"[a-zA-Z0-9](-*[a-zA-Z0-9\/])*",
    example="camera-front",
    hint="letters, digits, inner hyphens and slashes only",
)
UNIT_RULE = NameRule(
    field="unit",
    min_len=1,
    max_len=16,
    pattern=r"[a-zA-Z0-9]+",
    example="ms",
    hint="letters and digits only",
)


# The name of one of the agent's own figures (``AgentMetrics``), sent as is.
AGENT_METRIC_RULE = NameRule(
    field="agent metric",
    min_len=_EDGE_METRIC_NAME_MIN,
    max_len=_EDGE_METRIC_NAME_MAX,
    pattern=_ALNUM_HYPHEN,
    example="spool-records",
    hint="letters, digits and inner hyphens only",
)


def _metric_rule(unit: str | None) -> NameRule:
    longest_suffix = max(len(s) for s in STAT_SUFFIXES) + 1
    unit_part = len(unit) + 1 if unit else 0
    return NameRule(
        field="metric",
        min_len=1,
        max_len=_EDGE_METRIC_NAME_MAX - longest_suffix - unit_part,
        pattern=_ALNUM_HYPHEN,
        example="latency",
        hint="letters, digits and inner hyphens only; 'latency_ms' is invalid, use 'latency' "
        "with unit='ms'",
    )


METRIC_RULE = _metric_rule(None)


def heartbeat_metric_name(metric: str, unit: str | None, stat: str) -> str:
    """The ``EdgeMetric.MetricName`` of one statistic of a series: ``latency-ms-p99``."""
    if stat not in STAT_SUFFIXES:
        raise ValueError(f"unknown statistic {stat!r}; known: {', '.join(STAT_SUFFIXES)}")
    name = "-".join(part for part in (metric, unit, stat) if part)
    if not _EDGE_METRIC_NAME_MIN <= len(name) <= _EDGE_METRIC_NAME_MAX:
        raise ValueError(f"heartbeat metric name {name!r} is not 4-100 characters")
    return name


def check_series_names(
    model: str, version: str, metric: str, dimension: str | None, unit: str | None
) -> None:
    """Raise ``ValueError`` naming the first rule a series' names break."""
    if unit is not None and unit != "":
        problem = UNIT_RULE.problem(unit)
        if problem:
            raise ValueError(problem)
    checks = [
        (MODEL_RULE, model),
        (VERSION_RULE, version),
        (_metric_rule(unit or None), metric),
    ]
    if dimension is not None:
        checks.append((DIMENSION_RULE, dimension))
    for rule, value in checks:
        problem = rule.problem(value)
        if problem:
            raise ValueError(problem)
