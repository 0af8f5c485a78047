"""Failures that last, logged so that they are seen once and never flood a device's log.

A device that cannot deliver (no credentials, a refused signature, an unregistered name, an
endpoint it cannot reach) or cannot write its spool (a read-only or full disk) fails the same
way every interval, possibly for days.  ``FaultLog`` turns that into one WARNING when a class of
failure starts (or changes to another class), DEBUG while it lasts, and one INFO when it clears.
Messages must already be free of secrets: callers pass what the ``Sender`` cleaned.
"""

from __future__ import annotations

import logging
import threading

from ..heartbeat import DeviceIdentity
from .sender import Outcome, SendResult

__all__ = ["FaultLog", "describe_send_failure", "describe_sink_failure"]

_SIGNATURE_CODES = ("InvalidSignatureException", "SignatureDoesNotMatch",
                    "IncompleteSignatureException")


class FaultLog:
    """The state of one thing that can fail (``what``: "delivery", "the spool"), and its log."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._lock = threading.Lock()
        self._kind: str | None = None
        self._count = 0
        self._message: str | None = None

    @property
    def kind(self) -> str | None:
        """The class of the failure in progress, or None while all is well."""
        return self._kind

    @property
    def message(self) -> str | None:
        """The latest failure's message while one is in progress."""
        return self._message

    def failed(self, kind: str, message: str) -> None:
        """A failure of class ``kind``: WARNING when it starts or changes class, else DEBUG."""
        with self._lock:
            changed = kind != self._kind
            self._kind, self._message = kind, message
            self._count = 1 if changed else self._count + 1
            count = self._count
        if changed:
            self._log.warning("%s failing (%s): %s", self._what, kind, message)
        else:
            self._log.debug("%s still failing (%s, %d in a row): %s", self._what, kind, count,
                            message)

    def ok(self) -> None:
        """Success: an INFO line if a failure was in progress, nothing otherwise."""
        with self._lock:
            kind, count = self._kind, self._count
            self._kind, self._message, self._count = None, None, 0
        if kind is not None:
            self._log.info("%s recovered after %d failure(s) of class %s", self._what, count,
                           kind)


def describe_send_failure(result: SendResult, *, endpoint: str, region: str,
                          identity: DeviceIdentity) -> tuple[str, str]:
    """The class of a failed send and a message that says what to check (no secrets: the
    ``Sender`` cleaned the server's message; an access key id is not a secret)."""
    code = result.error_code or "?"
    said = f"{code}: {result.message}" if result.message else code
    device = f"device {identity.device_name} (fleet {identity.fleet_name})"
    if code == "CredentialsUnavailable":
        return "no credentials", (
            f"no credentials to sign requests to {endpoint} with ({result.message}); set "
            "aws_access_key_id and aws_secret_access_key, a profile or IoT certificates "
            "(docs/configuration.md), or boto3's own chain")
    if result.outcome is Outcome.CLOCK_SKEW:
        return "clock skew", f"{endpoint} refuses our request time even after a correction " \
                             f"from its Date header ({said})"
    if result.outcome is Outcome.REFRESH_CREDENTIALS:
        if code in _SIGNATURE_CODES:
            return "signature refused", (
                f"{endpoint} refused the request signature ({said}); check the secret key and "
                f"that the endpoint serves region {region}, the region requests are signed for")
        return "credentials refused", f"{endpoint} refused the credentials ({said})"
    if result.outcome is Outcome.FATAL:
        hint = ""
        if "not registered" in (result.message or ""):
            hint = f"; register {device} at the endpoint (edgetelemetry register)"
        return "request refused", (f"{endpoint} refused {device}'s heartbeat ({said}); such "
                                   f"records are dead-lettered{hint}")
    if result.http_status is None:
        return "endpoint unreachable", f"cannot reach {endpoint} ({said})"
    if result.http_status == 429:
        return "throttled", f"{endpoint} throttles {device} ({said})"
    return "endpoint error", f"{endpoint} answered HTTP {result.http_status} ({said})"


def describe_sink_failure(result: SendResult, *, sink: str) -> tuple[str, str]:
    """The class of a failed send through one of the other sinks (OTLP, MQTT) and a message
    (the sink already cleaned what the receiver said)."""
    code = result.error_code or "?"
    said = f"{code}: {result.message}" if result.message else code
    if result.outcome is Outcome.FATAL:
        return "request refused", f"{sink} refused a record ({said}); such records are " \
                                  f"dead-lettered for {sink} only"
    if result.outcome is Outcome.REFRESH_CREDENTIALS:
        return "credentials refused", f"{sink} refused our credentials ({said})"
    if result.http_status is None:
        return "unreachable", f"cannot deliver to {sink} ({said})"
    if result.http_status == 429:
        return "throttled", f"{sink} throttles us ({said})"
    return "receiver error", f"{sink} answered HTTP {result.http_status} ({said})"
