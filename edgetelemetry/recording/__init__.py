"""Recording: the public API an inference loop calls, on top of the native layer.

``recorder`` (``Recorder`` and its bound handles ``Histogram``, ``Group``, ``Timer``),
``shared`` (``SharedRecorder``: the device agent's side of a recorder other processes
attach to), ``naming`` (the rules a series' names follow), ``values`` (what
``record_many`` is given, as float64, every value accounted for), ``window`` (a closed C
window as a ``Snapshot``) and ``process`` (the boot id, fork hooks).
"""

from __future__ import annotations

from .recorder import Group, Histogram, Recorder, Timer
from .shared import SharedRecorder

__all__ = ["Group", "Histogram", "Recorder", "SharedRecorder", "Timer"]
