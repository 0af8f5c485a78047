"""The bench's C loops (``loops.c``, module ``_loops``) bound to one recorder.

They record through the ``et_api`` table of ``Recorder.native_handle()``, as any native module
in the process does (docs/native-sdk.md), so the bench needs nothing private of the recorder.
"""

from __future__ import annotations

from typing import Any

from ..recording import Recorder
from ._loops import ffi, lib

__all__ = ["CLoops"]


class CLoops:
    """``lib`` (the loops) and ``rec`` (the recorder's ``et_recorder *``) for timed statements.

    Valid while ``recorder`` is open: the loops must not run after it closes.
    """

    def __init__(self, recorder: Recorder) -> None:
        api, address = recorder.native_handle()
        if lib.bench_bind(api) != 0:
            raise RuntimeError("the recorder's et_api table is of another ABI version")
        self.lib: Any = lib
        self.rec: Any = ffi.cast("et_recorder *", address)
        self.null: Any = ffi.NULL

    def record_loop(self, series_id: int, value: float, n: int) -> int:
        """``n`` calls of et_record in C; returns how many were not kept."""
        return int(self.lib.bench_record_loop(self.rec, series_id, value, n))
