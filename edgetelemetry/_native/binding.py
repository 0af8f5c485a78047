"""Thin private layer over the cffi module: every return code checked, every pointer owned.

Nothing outside this module touches ``lib``.  ``CoreRecorder`` owns one ``et_recorder *`` and
frees it in ``free()``; ``ffi.gc`` is deliberately not used because the collector thread may
still be draining when a finaliser would run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import CoreError
from ._core import ffi, lib

__all__ = [
    "CONFIG_FIELDS",
    "DROP_REASONS",
    "E_SERIES_FULL",
    "MANTISSA_BITS",
    "REJECT_REASONS",
    "CoreRecorder",
    "RawSeries",
    "RawWindow",
    "check",
    "strerror",
]

# The core's facts the layers above need, as plain ints (they never see ``lib``).
MANTISSA_BITS: int = lib.ET_MANTISSA_BITS
E_SERIES_FULL: int = lib.ET_ESERIESFULL

DROP_REASONS = {
    lib.ET_DROP_RING_FULL: "ring_full",
    lib.ET_DROP_NO_RING: "no_ring",
    lib.ET_DROP_CLOSED: "closed",
}
REJECT_REASONS = {
    lib.ET_REJECT_NAN: "nan",
    lib.ET_REJECT_INF: "inf",
    lib.ET_REJECT_TYPE: "type",
}


def strerror(code: int) -> str:
    return str(ffi.string(lib.et_strerror(code)).decode())


def check(code: int, what: str) -> int:
    if code < 0:
        raise CoreError(code, f"{what}: {strerror(code)} ({code})")
    return code


@dataclass(frozen=True)
class RawSeries:
    names: tuple[str, str, str, str]
    count: int
    sum: float
    min: float
    max: float
    zero: int
    rejected: dict[str, int]
    dropped: dict[str, int]
    first_mono_ns: int
    last_mono_ns: int
    first_wall_ns: int
    last_wall_ns: int
    indexes: list[int]
    counts: list[int]


@dataclass(frozen=True)
class RawWindow:
    seq: int
    start_mono_ns: int
    end_mono_ns: int
    start_wall_ns: int
    end_wall_ns: int
    series: list[RawSeries]


def _four(items: Iterable[str]) -> tuple[str, str, str, str]:
    model, version, metric, dimension = items
    return model, version, metric, dimension


CONFIG_FIELDS = (
    "ring_capacity",
    "max_threads",
    "max_series",
    "buckets_per_octave",
    "min_exponent",
    "octaves",
    "names_bytes",
)


class CoreRecorder:
    """One ``et_recorder``.  Not thread-safe by itself: the public Recorder serialises calls."""

    def __init__(self, config: dict[str, int]) -> None:
        cfg = ffi.new("et_config *")
        lib.et_config_default(cfg)
        for key, value in config.items():
            setattr(cfg, key, value)
        out = ffi.new("et_recorder **")
        check(lib.et_recorder_new(cfg, out), "et_recorder_new")
        self._ptr: Any = out[0]
        self._stats = ffi.new("et_series_stats *")
        self._info = ffi.new("et_info *")

    @property
    def address(self) -> int:
        return int(ffi.cast("uintptr_t", self._ptr))

    @staticmethod
    def api_address() -> int:
        return int(ffi.cast("uintptr_t", lib.et_api_table()))

    def free(self) -> None:
        if self._ptr != ffi.NULL:
            lib.et_recorder_free(self._ptr)
            self._ptr = ffi.NULL

    def series_add(self, model: str, version: str, metric: str, dimension: str | None) -> int:
        out = ffi.new("uint32_t *")
        dim = ffi.NULL if dimension is None else dimension.encode()
        check(
            lib.et_series_add(
                self._ptr, model.encode(), version.encode(), metric.encode(), dim, out
            ),
            "et_series_add",
        )
        return int(out[0])

    def record_many(self, series_id: int, buffer: Any, n: int) -> int:
        values = ffi.from_buffer("double[]", buffer)
        taken = int(lib.et_record_many(self._ptr, series_id, values, n))
        return taken if taken >= 0 else check(taken, "et_record_many")

    def count_reject(self, series_id: int) -> None:
        lib.et_count_reject(self._ptr, series_id, lib.ET_REJECT_TYPE)

    def collect(self) -> None:
        check(lib.et_collect(self._ptr), "et_collect")

    def start_collector(self, period_ns: int) -> None:
        check(lib.et_collector_start(self._ptr, period_ns), "et_collector_start")

    def stop_collector(self) -> None:
        check(lib.et_collector_stop(self._ptr), "et_collector_stop")

    def info(self) -> dict[str, Any]:
        info = self._info
        check(lib.et_recorder_info(self._ptr, info), "et_recorder_info")
        out: dict[str, Any] = {key: getattr(info.config, key) for key in CONFIG_FIELDS}
        for key in (
            "memory_bytes",
            "relative_error",
            "series",
            "threads_active",
            "ring_high_water",
            "records_drained",
            "collector_passes",
            "unknown_series",
            "window_seq",
            "collector_period_ns",
        ):
            out[key] = getattr(info, key)
        return out

    def edges(self, buckets_per_octave: int) -> tuple[int, ...]:
        buf = ffi.new("uint32_t[]", buckets_per_octave + 1)
        n = check(lib.et_recorder_edges(self._ptr, buf, len(buf)), "et_recorder_edges")
        return tuple(buf[0:n])

    def close_window(self) -> RawWindow:
        out = ffi.new("et_window **")
        check(lib.et_window_close(self._ptr, out), "et_window_close")
        window = out[0]
        try:
            return self._read_window(window)
        finally:
            lib.et_window_free(window)

    def _read_window(self, w: Any) -> RawWindow:
        bounds = ffi.new("int64_t[4]")
        lib.et_window_bounds(w, bounds, bounds + 1, bounds + 2, bounds + 3)
        names = ffi.new("const char *[4]")
        stats = self._stats
        series = []
        for i in range(lib.et_window_series_count(w)):
            check(
                lib.et_window_series_names(w, i, names, names + 1, names + 2, names + 3),
                "et_window_series_names",
            )
            check(lib.et_window_series_stats(w, i, stats), "et_window_series_stats")
            k = stats.buckets
            indexes = ffi.new("uint32_t[]", max(k, 1))
            counts = ffi.new("uint64_t[]", max(k, 1))
            check(lib.et_window_buckets(w, i, indexes, counts, k), "et_window_buckets")
            series.append(
                RawSeries(
                    names=_four(ffi.string(names[j]).decode() for j in range(4)),
                    count=stats.count,
                    sum=stats.sum,
                    min=stats.min,
                    max=stats.max,
                    zero=stats.zero,
                    rejected={n: stats.rejected[c] for c, n in REJECT_REASONS.items()},
                    dropped={n: stats.dropped[c] for c, n in DROP_REASONS.items()},
                    first_mono_ns=stats.first_mono_ns,
                    last_mono_ns=stats.last_mono_ns,
                    first_wall_ns=stats.first_wall_ns,
                    last_wall_ns=stats.last_wall_ns,
                    indexes=ffi.unpack(indexes, k),
                    counts=ffi.unpack(counts, k),
                )
            )
        return RawWindow(
            seq=lib.et_window_seq(w),
            start_mono_ns=bounds[0],
            end_mono_ns=bounds[1],
            start_wall_ns=bounds[2],
            end_wall_ns=bounds[3],
            series=series,
        )
