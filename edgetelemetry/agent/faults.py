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

__all__ = ["FaultLog"]


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

