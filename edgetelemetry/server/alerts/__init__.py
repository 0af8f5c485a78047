"""Alerts evaluated by the endpoint: ``config`` (the JSON given to ``serve --alerts``),
``rules`` (pure evaluation), ``evaluator`` (the background pass), ``webhook`` (delivery)."""

from __future__ import annotations

from .config import AlertConfig, load_alert_config, parse_alert_config
from .evaluator import AlertEvaluator
from .rules import KINDS, Alert, FleetFacts, Rule, evaluate
from .webhook import Webhook, WebhookStats

__all__ = [
    "KINDS",
    "Alert",
    "AlertConfig",
    "AlertEvaluator",
    "FleetFacts",
    "Rule",
    "Webhook",
    "WebhookStats",
    "evaluate",
    "load_alert_config",
    "parse_alert_config",
]
