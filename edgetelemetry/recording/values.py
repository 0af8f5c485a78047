"""What ``record_many`` is given, as float64 values the core reads in place: never raises.

Every value passed is accounted for once: it becomes a float64 (NaN and Inf included: the core
counts those as rejected when it aggregates them) or it is counted here as a rejected value of
type ``type``.  So ``count + rejected + dropped`` of the series grows by exactly the number of
values passed, whatever they are:

- a C-contiguous float64 buffer (``array('d')``, a numpy float64 array of any shape) is read in
  place, with no copy;
- any other buffer (numpy arrays of other dtypes, strided views, ``array('f')``, ``bytes`` as
  unsigned bytes) is converted value by value, all its dimensions flattened;
- any other iterable (list, tuple, range, generator, dict keys, ...) is read once and each item
  converted as ``Histogram.record`` converts one value: ints and floats, and objects with
  ``__float__`` or ``__index__``; strings, ``None`` and other objects are rejected, one each;
- something that is not a batch at all (a number, ``None``, a string) is one rejected value;
- an iterable that raises while it is read: what it yielded is recorded, and the failure is
  counted as one rejected value.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from itertools import chain
from typing import Any, Optional

__all__ = ["Batch", "as_float64"]

# float64 in native byte order, as a buffer's format string may spell it
_NATIVE_DOUBLE = frozenset(
    {"d", "@d", "=d", "<d" if sys.byteorder == "little" else ">d"}
)


# (values, n, rejected): ``n`` float64 values in a C-contiguous buffer (None when n is 0), and
# how many values were no number.  A plain tuple: record_many of a small numpy array is a
# hot path, and a NamedTuple costs a Python-level __new__ per call.
Batch = tuple[Optional[memoryview], int, int]  # 3.9: no "X | None" at run time

_EMPTY: Batch = (None, 0, 0)
_ONE_BAD: Batch = (None, 0, 1)


def as_float64(values: object) -> Batch:
    """``values`` as float64 plus a count of rejections; never raises (see the module)."""
    try:
        view = memoryview(values)  # type: ignore[arg-type]
    except Exception:  # not a buffer (TypeError), or a buffer export that failed
        view = None
    if view is not None:
        return _from_buffer(values, view)
    if isinstance(values, (str, bytes, bytearray)) or values is None:
        return _ONE_BAD
    try:
        items = iter(values)  # type: ignore[call-overload]
    except Exception:
        return _ONE_BAD
    if isinstance(values, (list, tuple, range)):
        try:
            return _batch(array("d", values), 0)  # all numbers: the fast way
        except Exception:
            pass
    return _convert(items)


def _from_buffer(obj: object, view: memoryview) -> Batch:
    if view.format in _NATIVE_DOUBLE and view.c_contiguous:
        n = view.nbytes >> 3
        return (view, n, 0) if n else _EMPTY
    try:
        flat: Any = view.tolist()  # nested lists, one level per dimension
        levels = view.ndim
    except Exception:  # a format memoryview cannot read (float16, big-endian, complex, ...):
        flat, levels = obj, view.ndim  # the object's own iteration gives its scalars
    if levels == 0:
        return _convert(iter((flat,)))
    try:
        items: Iterator[Any] = iter(flat)
        for _ in range(levels - 1):
            items = chain.from_iterable(items)
        return _convert(items)
    except Exception:
        return _ONE_BAD


def _convert(items: Iterator[Any]) -> Batch:
    out = array("d")
    rejected = 0
    append = out.append
    try:
        for item in items:
            value = _as_float(item)
            if value is None:
                rejected += 1
            else:
                append(value)
    except Exception:  # the iterable itself failed: keep what it gave, count the failure
        rejected += 1
    return _batch(out, rejected)


def _as_float(item: object) -> float | None:
    """One value as ``Histogram.record`` converts it, or None when it is no number."""
    if type(item) is float:
        return item
    if isinstance(item, (str, bytes, bytearray)) or item is None:
        return None  # float("3.2") would parse it: record() does not, so neither does this
    try:
        return float(item)  # type: ignore[arg-type]
    except Exception:
        return None


def _batch(values: array[float], rejected: int) -> Batch:
    n = len(values)
    return (memoryview(values) if n else None, n, rejected)

