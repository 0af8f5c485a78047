"""Secrets kept out of logs: the filter that masks signing headers and key values in botocore's
and urllib3's DEBUG records, and in every message the sender reports."""

from __future__ import annotations

import logging
import re
import threading

__all__ = ["REDACT", "RedactSecrets", "install_log_redaction"]


class RedactSecrets(logging.Filter):
    """Masks signing headers and known key values in botocore's and urllib3's DEBUG records.

    botocore logs whole prepared requests at DEBUG (``Sending http request: <AWSPreparedRequest
    ... headers={'Authorization': ..., 'X-Amz-Security-Token': ...}>``) and whole response
    bodies, which may echo a key id; an agent run with verbose logging must not write them.
    Loggers run filters only for records that pass their level, so this costs nothing unless
    DEBUG is on.  One instance per process; senders ``remember`` the keys they sign with.
    """

    _HEADERS = re.compile(
        r"""((?:authorization|x-amz-security-token)['"]?\s*[:=]\s*b?['"]?)([^'",}\n]+)""",
        re.IGNORECASE,
    )
    _MAX_REMEMBERED = 64

    def __init__(self) -> None:
        super().__init__()
        self._secrets: dict[str, None] = {}  # insertion-ordered set, oldest dropped first
        self._lock = threading.Lock()

    def remember(self, *values: str | None) -> None:
        with self._lock:
            for value in values:
                if value and len(value) >= 8 and value not in self._secrets:
                    self._secrets[value] = None
                    while len(self._secrets) > self._MAX_REMEMBERED:
                        del self._secrets[next(iter(self._secrets))]

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = list(self._secrets)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, "<redacted>")
        return self._HEADERS.sub(r"\1<redacted>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        redacted = self.redact(text)
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


REDACT = RedactSecrets()
# The botocore/urllib3 loggers that write request or response headers at DEBUG.
_HEADER_LOGGERS = ("botocore.endpoint", "botocore.auth", "botocore.parsers",
                   "botocore.hooks", "botocore.retryhandler", "urllib3.connectionpool")


def install_log_redaction() -> None:
    for name in _HEADER_LOGGERS:
        lg = logging.getLogger(name)
        if REDACT not in lg.filters:
            lg.addFilter(REDACT)
