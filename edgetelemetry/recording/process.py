"""Process-wide facts of recording: the kernel's boot id, and hooks run in a fork child.

Lazy: nothing runs at import.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

__all__ = ["boot_id", "on_fork_in_child"]

_hooks: list[weakref.WeakMethod[Callable[[], None]]] = []
_hooks_lock = threading.Lock()
_fork_hook_installed = False
_boot_id: str | None = None


def on_fork_in_child(method: Callable[[], None]) -> None:
    """Run the bound ``method`` in the child after every ``fork()``, for as long as its object
    lives (it is held weakly: registering never keeps a recorder alive)."""
    global _fork_hook_installed
    with _hooks_lock:
        _hooks[:] = [h for h in _hooks if h() is not None]
        _hooks.append(weakref.WeakMethod(method))
        if not _fork_hook_installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True


def _after_fork_in_child() -> None:
    # only the forking thread exists here: the lock may have been held by another one
    for ref in list(_hooks):
        method = ref()
        if method is not None:
            method()


def boot_id() -> str:
    """The kernel's boot id ('' where there is none): monotonic timestamps compare only within
    one boot."""
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
                _boot_id = f.read().strip()
        except OSError:
            _boot_id = ""
    return _boot_id
