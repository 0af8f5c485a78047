"""The native layer (private): the only code that touches the cffi ``lib`` and the fast path.

Two compiled modules live here, both built from the files beside this one:

- ``_core``: the C core (``csrc/``) compiled by cffi from ``build_core.py``, declared in
  ``core_cdef.h``; wrapped by ``binding.py``, which checks every return code and owns every
  pointer.  Nothing outside ``binding.py`` touches ``_core.lib``.
- ``_fastpath``: ``fastpath.c``, the Python hot path (``record``, ``group.record``,
  ``time()``) as C methods that record through the core's ``et_api`` table.

``recording/`` builds the public API on the names exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

from . import _fastpath
from ._fastpath import GROUP_MAX, GroupBase, SeriesBase, Timer
from .binding import (
    CONFIG_FIELDS,
    MANTISSA_BITS,
    NOT_OWNER,
    SEGMENT_LAYOUT,
    SHARED_INFO_FIELDS,
    CoreRecorder,
    RawSeries,
    RawWindow,
    SharedOptions,
    segment_info,
)

__all__ = [
    "CONFIG_FIELDS",
    "GROUP_MAX",
    "MANTISSA_BITS",
    "NOT_OWNER",
    "SEGMENT_LAYOUT",
    "SHARED_INFO_FIELDS",
    "CoreRecorder",
    "GroupBase",
    "RawSeries",
    "RawWindow",
    "SeriesBase",
    "SharedOptions",
    "Timer",
    "detach",
    "segment_info",
    "set_decorator",
    "set_ns_per_unit",
]

Handle = Union[SeriesBase, GroupBase]


def set_decorator(decorate: Callable[[Any, float, Any], Any]) -> None:
    """Register what ``handle.time()`` does as a decorator: ``decorate(handle, ns_per_unit,
    function)`` returns the timed function (the recorder tells coroutines apart)."""
    _fastpath._set_decorator(decorate)


def detach(handle: Handle) -> None:
    """Make a handle's records no-ops: its recorder is closing."""
    handle._detach()


def set_ns_per_unit(handle: SeriesBase, ns_per_unit: float) -> None:
    """Nanoseconds per unit of the series, for ``time()`` (0 when the unit is no time)."""
    handle._ns_per_unit = ns_per_unit


def ns_per_unit(handle: SeriesBase) -> float:
    return float(handle._ns_per_unit)
