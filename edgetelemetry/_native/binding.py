"""Thin private layer over the cffi module: every return code checked, every pointer owned.

Nothing outside this module touches ``lib``.  ``CoreRecorder`` owns one ``et_recorder *`` and
frees it in ``free()``; ``ffi.gc`` is deliberately not used because the collector thread may
still be draining when a finaliser would run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import (
    CoreError,
    NameClashError,
    NamesFullError,
    SeriesLimitError,
    UnitConflictError,
)
from ._core import ffi, lib

__all__ = [
    "CONFIG_FIELDS",
    "DROP_REASONS",
    "INFO_FIELDS",
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
    """One listed series of a closed window: ``unit`` and ``dimension`` are "" for none."""

    series_id: int
    names: tuple[str, str, str, str]
    unit: str
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
    coarse: int


@dataclass(frozen=True)
class RawWindow:
    seq: int
    start_mono_ns: int
    end_mono_ns: int
    start_wall_ns: int
    end_wall_ns: int
    series: list[RawSeries]


def _describe(
    model: str, version: str, metric: str, dimension: str | None, unit: str | None
) -> str:
    return f"{_series(metric, dimension, unit)} of model {model} {version}"


def _series(metric: str, dimension: str | None, unit: str | None) -> str:
    unit_part = f"unit {unit!r}" if unit else "no unit"
    dim = f", dimension {dimension!r}" if dimension else ""
    return f"series {metric!r} ({unit_part}{dim})"


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
    "histogram_pages",
)

# et_info's own figures (beside its configuration), as ``CoreRecorder.info()`` keys.
INFO_FIELDS = (
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
    "full_drains",
    "direct_values",
    "pool_exhausted",
    "pages_high_water",
    "series_bytes",
    "page_bytes",
    "integrity_errors",
)


class CoreRecorder:
    """One ``et_recorder``.  Not thread-safe by itself: the public Recorder serialises calls."""

    def __init__(self, config: dict[str, int]) -> None:
        """``config``: ``CONFIG_FIELDS`` to set; the others keep the core's defaults
        (``names_bytes`` and ``histogram_pages`` left at 0 scale with ``max_series``)."""
        cfg = ffi.new("et_config *")
        lib.et_config_default(cfg)
        for key, value in config.items():
            if key not in CONFIG_FIELDS:
                raise KeyError(f"{key!r} is not an et_config field")
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

    def series_add(
        self, model: str, version: str, metric: str, dimension: str | None, unit: str | None
    ) -> int:
        """Register (or find) a series; its id.  The registry's refusals raise the
        ``RegistrationError`` that names the cause and what to pass instead."""
        out = ffi.new("uint32_t *")
        names = (model.encode(), version.encode(), metric.encode())
        dim = ffi.NULL if dimension is None else dimension.encode()
        code = lib.et_series_add_unit(self._ptr, *names, dim, (unit or "").encode(), out)
        if code == lib.ET_OK:
            return int(out[0])
        what = _describe(model, version, metric, dimension, unit)
        if code == lib.ET_ESERIESFULL:
            limit = self.info()["max_series"]
            raise SeriesLimitError(
                f"cannot register {what}: the recorder holds max_series={limit} series; "
                f"create the Recorder with a larger max_series (for example {limit * 2})"
            )
        if code == lib.ET_ENAMESFULL:
            info = self.info()
            raise NamesFullError(
                f"cannot register {what}: the names of {info['series']} series fill "
                f"names_bytes={info['names_bytes']}; create the Recorder with a larger "
                f"names_bytes (for example {info['names_bytes'] * 2}), or shorter names"
            )
        if code == lib.ET_EUNIT:
            found = lib.et_series_add(self._ptr, *names, dim, out)  # exists: found, not added
            have = self.series_names(int(out[0]))[4] if found == lib.ET_OK else None
            had = f"unit {have!r}" if have else "no unit"
            raise UnitConflictError(
                f"cannot register {what}: it is registered with {had} (one series has one "
                "unit); pass that unit, or use another metric name for this one"
            )
        if code == lib.ET_ENAMECLASH:
            existing = self.series_names(int(out[0]))
            first = _series(*existing[2:])
            name = "-".join(p for p in (metric, unit) if p)
            raise NameClashError(
                f"cannot register {what}: its heartbeat metrics ({name}-p99, {name}-count, "
                f"...) would be those of {first}, registered first; rename one of them",
                existing,
            )
        check(code, "et_series_add_unit")
        raise AssertionError("unreachable")  # pragma: no cover

    def series_names(self, series_id: int) -> tuple[str, str, str, str | None, str | None]:
        """(model, version, metric, dimension, unit) of a registered series; None for no
        dimension or unit."""
        out = ffi.new("const char *[5]")
        check(
            lib.et_series_names(self._ptr, series_id, out, out + 1, out + 2, out + 3, out + 4),
            "et_series_names",
        )
        model, version, metric, dimension, unit = (ffi.string(p).decode() for p in out)
        return model, version, metric, dimension or None, unit or None

    def record_many(self, series_id: int, buffer: Any, n: int) -> int:
        """Record n float64 values from ``buffer`` (read in place); how many were taken: n,
        except from a signal handler whose thread holds the aggregate lock (the rest are
        dropped and counted by the core).  Never raises: the hot path."""
        values = ffi.from_buffer("double[]", buffer)
        taken = int(lib.et_record_many(self._ptr, series_id, values, n))
        return max(taken, 0)  # ET_EINVAL needs values NULL with n > 0: a buffer never is

    def count_reject(self, series_id: int, n: int = 1) -> None:
        """Count n values of the series that were not numbers (ET_REJECT_TYPE)."""
        for _ in range(n):
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
        for key in INFO_FIELDS:
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
        names = ffi.new("const char *[5]")
        series_id = ffi.new("uint32_t *")
        stats = self._stats
        series = []
        for i in range(lib.et_window_series_count(w)):
            check(lib.et_window_series_id(w, i, series_id), "et_window_series_id")
            check(
                lib.et_window_series_names(w, i, names, names + 1, names + 2, names + 3),
                "et_window_series_names",
            )
            check(lib.et_window_series_unit(w, i, names + 4), "et_window_series_unit")
            check(lib.et_window_series_stats(w, i, stats), "et_window_series_stats")
            k = stats.buckets
            indexes = ffi.new("uint32_t[]", max(k, 1))
            counts = ffi.new("uint64_t[]", max(k, 1))
            check(lib.et_window_buckets(w, i, indexes, counts, k), "et_window_buckets")
            series.append(
                RawSeries(
                    series_id=int(series_id[0]),
                    names=_four(ffi.string(names[j]).decode() for j in range(4)),
                    unit=ffi.string(names[4]).decode(),
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
                    coarse=stats.coarse,
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
