"""What a long-running agent needs of its service manager: journald-friendly log lines on
stderr and systemd's readiness protocol (``sd_notify``), both without a dependency.

- ``journal_logging``: one line per event on stderr.  Under systemd (``JOURNAL_STREAM`` set)
  each line starts with its syslog priority, ``<3>`` to ``<7>``, which journald stores as the
  entry's priority (``journalctl -p warning``) and strips; journald adds the time and unit.
  Otherwise a plain ``2026-12-03T10:00:00Z WARNING edgetelemetry.agent: ...``.  A message or
  traceback of several lines is joined into one with `` | ``, so an event is one entry.
- ``notify``: a datagram to ``$NOTIFY_SOCKET`` (``Type=notify``): ``READY=1`` once the segment
  is open and the agent ticks, ``RELOADING=1`` / ``STOPPING=1``, ``STATUS=...``.  Nothing
  happens outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import TextIO

__all__ = ["JournalFormatter", "journal_logging", "notify", "set_verbose"]

# logging level -> syslog priority (sd-daemon.h: SD_ERR "<3>" ... SD_DEBUG "<7>")
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
             (logging.INFO, 6))


def _priority(levelno: int) -> int:
    for level, priority in _PRIORITY:
        if levelno >= level:
            return priority
    return 7


class JournalFormatter(logging.Formatter):
    """One line per record; ``<N>`` syslog priority first for journald, else a UTC time."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = " | ".join(line for line in super().format(record).splitlines() if line.strip())
        if self.journal:
            return f"<{_priority(record.levelno)}>{text}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        return f"{stamp} {text}"


def journal_logging(verbose: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """Log edgetelemetry's records (INFO, or DEBUG when ``verbose``) to stderr, one line each;
    returns the handler (the level is changed on reload through it)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JournalFormatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, JournalFormatter)]:
        root.removeHandler(old)
    root.addHandler(handler)
    set_verbose(verbose)
    return handler


def set_verbose(verbose: bool) -> None:
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
    # botocore and urllib3 at DEBUG print request bodies: keep them at WARNING regardless
    for noisy in ("botocore", "urllib3", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def notify(state: str) -> bool:
    """Send ``state`` ("READY=1", "STATUS=...") to systemd; False when not under systemd (no
    ``$NOTIFY_SOCKET``) or when the socket refused it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError as exc:
        logging.getLogger(__name__).debug("sd_notify %r: %s", state, exc)
        return False
