"""The alert evaluator: a background thread that reads the store every ``interval_s``, evaluates
the rules (``rules.evaluate``) and sends what changed (fired, resolved) to the webhook.

One pass is bounded: four store queries for the whole fleet, then at most ``max_alerts`` alerts
(more are counted in ``left_out`` and logged, never kept).

Replicas and workers sharing a store all evaluate (each shows the alerts on its page), but only
the one holding the store's ``alerts`` lead (``FleetStore.hold_lead``: an advisory lock in
PostgreSQL, a file lock beside a SQLite file) sends to the webhook, so an alert is sent once.
A process that takes the lead over sends what is firing at once: across a handover an alert
may be sent twice, never lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..store import FleetStore, StoreError
from .config import AlertConfig
from .rules import DEAD_LETTERS, Alert, FleetFacts, Rule, evaluate
from .webhook import Webhook

__all__ = ["AlertEvaluator"]

logger = logging.getLogger(__name__)

_Key = tuple[str, tuple[tuple[str, str], ...]]
LEAD = "alerts"  # the store's lead that sends to the webhook


class AlertEvaluator:
    def __init__(
        self,
        store: FleetStore,
        rules: Sequence[Rule],
        *,
        webhook: Webhook | None = None,
        interval_s: float = 30.0,
        max_alerts: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval_s > 0 or max_alerts < 1:
            raise ValueError("the alert interval must be positive and max_alerts at least 1")
        self.store = store
        self.rules = tuple(rules)
        self.webhook = webhook
        self.interval_s = interval_s
        self.max_alerts = max_alerts
        self.clock = clock
        self.passes = 0
        self.left_out = 0
        self.leading = False
        self._firing: dict[_Key, Alert] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def configured(
        cls, store: FleetStore, config: AlertConfig, clock: Callable[[], float] = time.time
    ) -> AlertEvaluator:
        """An evaluator (and its webhook) as ``config`` (``serve --alerts``) describes it."""
        webhook = None
        if config.webhook_url:
            webhook = Webhook(
                config.webhook_url,
                config.webhook_headers,
                timeout_s=config.webhook_timeout_s,
                max_age_s=config.webhook_max_age_s,
            )
        return cls(
            store,
            config.rules,
            webhook=webhook,
            interval_s=config.interval_s,
            max_alerts=config.max_alerts,
            clock=clock,
        )

    def firing(self) -> list[Alert]:
        """The alerts firing after the latest pass, oldest first."""
        with self._lock:
            return sorted(self._firing.values(), key=lambda a: (a.since, a.rule, a.labels))

    def evaluate_once(self) -> tuple[list[Alert], list[Alert]]:
        """One pass: (fired, resolved) since the previous one; the webhook is told of both."""
        now = self.clock()
        facts = FleetFacts(
            self.store.devices(),
            self.store.latest_by_prefix(""),
            self.store.latest_agent_points(names=[DEAD_LETTERS]),
            self.store.latest_deployment_results(),
        )
        with self._lock:
            previous = self._firing
        current, over = evaluate(self.rules, facts, now, previous, self.max_alerts)
        fired = [a for k, a in current.items() if k not in previous]
        resolved = [a for k, a in previous.items() if k not in current]
        with self._lock:
            self._firing = current
            self.passes += 1
            self.left_out = over
        if over:
            logger.warning(
                "alerts: %d alerts over max_alerts=%d left out of this pass", over, self.max_alerts
            )
        if self.webhook is None:
            return fired, resolved
        was_leading, self.leading = self.leading, self.store.hold_lead(LEAD)
        if self.leading and not was_leading and self.passes > 1:
            # taken over from another process: what fires may not have been sent
            fired = list(current.values())
        if self.leading and (fired or resolved):
            self.webhook.notify(_document(fired, resolved, now))
        return fired, resolved

    def start(self) -> None:
        if self.webhook is not None:
            self.webhook.start()
        self._thread = threading.Thread(target=self._run, name="edgetelemetry-alerts", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.webhook is not None:
            self.webhook.stop(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.evaluate_once()
            except StoreError as exc:
                logger.warning("alerts: store unavailable, pass skipped: %s", exc)
            except Exception:  # a bug of ours must not end the evaluator
                logger.exception("alerts: evaluation pass failed")
            self._stop.wait(self.interval_s)


def _document(fired: list[Alert], resolved: list[Alert], now: float) -> dict[str, Any]:
    """The webhook's JSON: one document per pass that changed something."""
    return {
        "version": 1,
        "source": "edgetelemetry-endpoint",
        "sent_at": now,
        "firing": [a.to_json() for a in fired],
        "resolved": [{**a.to_json(), "resolved_at": now} for a in resolved],
    }
