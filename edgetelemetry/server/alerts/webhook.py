"""Delivery of alert notifications to a webhook: JSON POSTs from a thread of their own.

``Webhook.notify`` never blocks and never raises: it appends to a bounded queue (the oldest
notification is dropped, counted and logged when it is full), so the evaluator, let alone
ingestion, never waits for the receiver.  The sender thread delivers in order; a failure
(connection refused, timeout, 5xx, 429) is retried with exponential backoff and jitter until
the notification is ``max_age_s`` old, then dropped and logged.  Other 4xx answers are not
retried (the receiver refuses the document; resending it would not change that).

Header values (an ``Authorization`` token, typically) are sent and never logged: messages name
the URL without credentials, the status and the error class.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Webhook", "WebhookStats"]

logger = logging.getLogger(__name__)


@dataclass
class WebhookStats:
    delivered: int = 0
    attempts: int = 0
    retries: int = 0
    dropped_full: int = 0
    dropped_expired: int = 0
    refused: int = 0


def _shown(url: str) -> str:
    """The URL as logged: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Webhook:
    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout_s: float = 5.0,
        queue_size: int = 1000,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the alert webhook url must be http:// or https:// with a host")
        if not (
            timeout_s > 0
            and first_backoff_s > 0
            and max_backoff_s >= first_backoff_s
            and max_age_s > 0
            and queue_size > 0
        ):
            raise ValueError("webhook timeout, backoff, max age and queue size must be positive")
        self.url = url
        self.shown_url = _shown(url)
        self._headers = dict(headers or {})
        self.timeout_s = timeout_s
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_age_s = max_age_s
        self.clock = clock
        self.stats = WebhookStats()
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never the headers
        return f"Webhook({self.shown_url!r})"

    def notify(self, document: Mapping[str, Any]) -> None:
        body = json.dumps(document, allow_nan=False, sort_keys=True).encode("utf-8")
        with self._cond:
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.stats.dropped_full += 1
                logger.warning(
                    "alert webhook %s: queue full, oldest notification dropped", self.shown_url
                )
            self._queue.append((self.clock(), body))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="edgetelemetry-alert-webhook", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _send(self, body: bytes) -> int | None:
        """The receiver's status, or None when it was not reached."""
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                **self._headers,
                "Content-Type": "application/json",
                "User-Agent": "edgetelemetry-endpoint-alerts/1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read(65536)
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)
        except (OSError, ValueError) as exc:  # refused, reset, timeout, TLS, bad answer
            logger.info("alert webhook %s unreachable: %s", self.shown_url, type(exc).__name__)
            return None

    def _run(self) -> None:
        backoff = self.first_backoff_s
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                queued_at, body = self._queue[0]
            if self.clock() - queued_at > self.max_age_s:
                self._pop(body)
                self.stats.dropped_expired += 1
                logger.warning(
                    "alert webhook %s: notification undelivered after %.0f s, dropped",
                    self.shown_url,
                    self.max_age_s,
                )
                continue
            self.stats.attempts += 1
            status = self._send(body)
            if status is not None and 200 <= status < 300:
                self._pop(body)
                self.stats.delivered += 1
                backoff = self.first_backoff_s
                continue
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                self._pop(body)
                self.stats.refused += 1
                logger.warning(
                    "alert webhook %s refused a notification: HTTP %d", self.shown_url, status
                )
                continue
            self.stats.retries += 1
            if status is not None:
                logger.info("alert webhook %s answered HTTP %d; retrying", self.shown_url, status)
            delay = backoff * random.uniform(0.5, 1.0)
            backoff = min(self.max_backoff_s, backoff * 2)
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, timeout=delay):
                    return

    def _pop(self, body: bytes) -> None:
        with self._cond:
            if self._queue and self._queue[0][1] is body:
                self._queue.popleft()
