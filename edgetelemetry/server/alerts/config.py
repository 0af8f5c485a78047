"""The endpoint's alert configuration: a JSON file given to ``edgetelemetry serve --alerts``.

::

    {
      "interval_s": 30, "max_alerts": 1000,
      "webhook": {"url": "https://hooks.example/edge", "headers": {"Authorization": "Bearer ..."},
                  "timeout_s": 5, "max_age_s": 3600},
      "rules": [
        {"name": "silent", "kind": "device_silent", "heartbeat_interval_s": 60, "intervals": 3},
        {"name": "slow", "kind": "p99_above", "metric": "latency-ms", "threshold": 250},
        {"name": "drops", "kind": "drops"},
        {"name": "dead-letters", "kind": "dead_letters"},
        {"name": "deploy", "kind": "deployment_failed", "severity": "critical"}
      ]
    }

The file may hold secrets (webhook headers), so it must be private to its owner, as the
credentials file is.  Errors name the key that is wrong, never a header's value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..private_file import read_private
from .rules import KINDS, Rule

__all__ = ["AlertConfig", "load_alert_config", "parse_alert_config"]

_MAX_FILE = 1 << 20


@dataclass(frozen=True)
class AlertConfig:
    rules: tuple[Rule, ...]
    interval_s: float = 30.0
    max_alerts: int = 1000
    webhook_url: str | None = None
    webhook_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    webhook_timeout_s: float = 5.0
    webhook_max_age_s: float = 3600.0


def _positive(doc: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = doc.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{where}{key} must be a positive number")
    return float(value)


def _keys(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        allowed_keys = ", ".join(sorted(allowed))
        raise ValueError(f"{where}unknown key {unknown[0]!r} (allowed: {allowed_keys})")


def _rule(doc: Any, index: int, names: set[str]) -> Rule:
    where = f"rules[{index}]."
    if not isinstance(doc, dict):
        raise ValueError(f"rules[{index}] must be an object")
    _keys(
        doc,
        {"name", "kind", "severity", "heartbeat_interval_s", "intervals", "metric", "threshold"},
        where,
    )
    name, kind = doc.get("name"), doc.get("kind")
    if not isinstance(name, str) or not name or len(name) > 100:
        raise ValueError(f"{where}name must be a non-empty string")
    if name in names:
        raise ValueError(f"{where}name {name!r} is used twice")
    if kind not in KINDS:
        raise ValueError(f"{where}kind must be one of {', '.join(KINDS)}")
    severity = doc.get("severity", "warning")
    if not isinstance(severity, str) or not severity:
        raise ValueError(f"{where}severity must be a string")
    intervals = doc.get("intervals", 3)
    if isinstance(intervals, bool) or not isinstance(intervals, int) or intervals < 1:
        raise ValueError(f"{where}intervals must be a whole number, 1 or more")
    metric = doc.get("metric", "*")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"{where}metric must be a metric base name or '*'")
    threshold = doc.get("threshold", 0.0)
    if kind == "p99_above" and "threshold" not in doc:
        raise ValueError(f"{where}threshold is required for p99_above")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
    ):
        raise ValueError(f"{where}threshold must be a number")
    names.add(name)
    return Rule(
        name,
        kind,
        severity,
        _positive(doc, "heartbeat_interval_s", 60.0, where),
        intervals,
        metric,
        float(threshold),
    )


def parse_alert_config(doc: Any) -> AlertConfig:
    if not isinstance(doc, dict):
        raise ValueError("the alert configuration must be a JSON object")
    _keys(doc, {"interval_s", "max_alerts", "webhook", "rules"}, "")
    rules = doc.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ValueError("rules must be a non-empty list")
    names: set[str] = set()
    parsed = tuple(_rule(r, i, names) for i, r in enumerate(rules))
    max_alerts = doc.get("max_alerts", 1000)
    if isinstance(max_alerts, bool) or not isinstance(max_alerts, int) or max_alerts < 1:
        raise ValueError("max_alerts must be a whole number, 1 or more")
    hook = doc.get("webhook")
    url, headers, timeout, max_age = None, {}, 5.0, 3600.0
    if hook is not None:
        if not isinstance(hook, dict):
            raise ValueError("webhook must be an object")
        _keys(hook, {"url", "headers", "timeout_s", "max_age_s"}, "webhook.")
        url = hook.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("webhook.url must be an http:// or https:// URL")
        raw = hook.get("headers", {})
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v and "\r" not in k + v
            for k, v in raw.items()
        ):
            raise ValueError("webhook.headers must map header names to one-line strings")
        headers = dict(raw)
        timeout = _positive(hook, "timeout_s", 5.0, "webhook.")
        max_age = _positive(hook, "max_age_s", 3600.0, "webhook.")
    return AlertConfig(
        parsed, _positive(doc, "interval_s", 30.0, ""), max_alerts, url, headers, timeout, max_age
    )


def load_alert_config(path: str) -> AlertConfig:
    """Read and check ``path``: private to its owner, at most 1 MiB, valid JSON and rules."""
    data = read_private(path, "alert configuration", _MAX_FILE)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"alert configuration {path} is not valid JSON: line {getattr(exc, 'lineno', '?')}"
        ) from None
    try:
        return parse_alert_config(doc)
    except ValueError as exc:
        raise ValueError(f"alert configuration {path}: {exc}") from None
