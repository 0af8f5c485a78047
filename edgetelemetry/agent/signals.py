"""SIGTERM for an agent: flush and close it, then run the handler that was there before.

A signal that arrives while the thread it interrupts is inside the agent (a user calling
``tick()``) waits until that thread leaves it: finishing the step first is the only safe order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["SigtermGuard"]

log = logging.getLogger(__name__)


class SigtermGuard:
    """Installed in the main thread only (``signal.signal`` works there only)."""

    def __init__(self, close: Callable[[], None]) -> None:
        self._close = close
        self._tls = threading.local()
        self._term_pending = False
        self._prev: Any = None
        self._installed = False

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Marks this thread as inside the agent, so SIGTERM does not re-enter it mid-step."""
        depth = getattr(self._tls, "depth", 0)
        self._tls.depth = depth + 1
        try:
            yield
        finally:
            self._tls.depth = depth
            if depth == 0 and self._term_pending \
                    and threading.current_thread() is threading.main_thread():
                self._term_pending = False
                self._terminate(signal.SIGTERM, None)

    def install(self) -> None:
        self._prev = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def restore(self) -> None:
        if not self._installed:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal works in the main thread only; the handler stays harmless
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._prev)
        self._installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if getattr(self._tls, "depth", 0) > 0:
            # Interrupted inside the agent on this thread (a user calling tick()): finishing
            # that step first is the only safe order; entered() runs the rest on the way out.
            self._term_pending = True
            return
        self._terminate(signum, frame)

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        prev = self._prev
        log.info("SIGTERM: flushing the current window")
        self._close()
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_IGN:
            return
        else:  # SIG_DFL (or unknown): terminate as if we had never been here
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
