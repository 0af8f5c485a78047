"""Thin private layer over the cffi module: every return code checked, every pointer owned.

Nothing outside this module touches ``lib``.  ``CoreRecorder`` owns one ``et_recorder *`` and
frees it in ``free()``; ``ffi.gc`` is deliberately not used because the collector thread may
still be draining when a finaliser would run.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import (
    AgentBusyError,
    CoreError,
    LayoutMismatchError,
    LockTimeoutError,
    NameClashError,
    NamesFullError,
    NoSegmentError,
    NotASegmentError,
    NotOwnerError,
    ProcessTableFullError,
    SegmentConfigError,
    SegmentPermissionError,
    SegmentTruncatedError,
    SeriesLimitError,
    SharedRecorderError,
    UnitConflictError,
)
from ._core import ffi, lib

__all__ = [
    "CONFIG_FIELDS",
    "DROP_REASONS",
    "INFO_FIELDS",
    "MANTISSA_BITS",
    "NOT_OWNER",
    "REJECT_REASONS",
    "SEGMENT_LAYOUT",
    "SHARED_INFO_FIELDS",
    "CoreRecorder",
    "RawSeries",
    "RawWindow",
    "SharedOptions",
    "check",
    "segment_info",
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


def check(code: int, what: str, path: str | None = None) -> int:
    """``code`` if it is no error; else the exception for it (a shared recorder's codes have
    one class each, whose message says what to do; ``path`` is the segment's)."""
    if code >= 0:
        return code
    if code == lib.ET_ESYSTEM:
        errno = ffi.errno  # read before anything else can change it
        raise OSError(errno, f"{what}: {os.strerror(errno)}", path)
    if code in _SHARED_CODES:
        raise _shared_error(code, what, path)
    raise CoreError(code, f"{what}: {strerror(code)} ({code})")


SEGMENT_LAYOUT: int = lib.ET_SEGMENT_LAYOUT
NOT_OWNER: int = lib.ET_ENOTOWNER

_SHARED_CODES = frozenset({
    lib.ET_ENOSEGMENT, lib.ET_ENOTSEGMENT, lib.ET_ELAYOUT, lib.ET_EACCES, lib.ET_EPROCFULL,
    lib.ET_ENOTOWNER, lib.ET_EBUSY, lib.ET_ECONFIG, lib.ET_ETRUNCATED, lib.ET_ETIMEDOUT,
})


def _group_of(path: str) -> str | None:
    """The group of the segment, or of the first directory on its way this process may not
    enter (what the user must join); None when even that is unknown."""
    candidates = [path]
    parent = os.path.dirname(os.path.abspath(path))
    while parent and parent not in candidates:
        candidates.append(parent)
        parent = os.path.dirname(parent) if parent != "/" else ""
    for candidate in candidates:
        try:
            gid = os.stat(candidate).st_gid
        except OSError:
            continue
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)
    return None


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _shared_error(code: int, what: str, path: str | None) -> SharedRecorderError:
    where = path if path is not None else "the segment"
    info: dict[str, Any] = {}
    if path is not None and code in (lib.ET_ELAYOUT, lib.ET_EPROCFULL, lib.ET_EBUSY,
                                     lib.ET_ECONFIG, lib.ET_ETRUNCATED):
        info = segment_info(path)
    if code == lib.ET_ENOSEGMENT:
        return NoSegmentError(code, (
            f"{what}: no shared recorder at {where}: the device agent creates it there "
            "(edgetelemetry agent, its segment_path); start the agent, or attach to the path "
            "it uses"), path)
    if code == lib.ET_ENOTSEGMENT:
        return NotASegmentError(code, (
            f"{what}: {where} is not an edgetelemetry shared recorder (or its header is "
            "damaged); attach to the agent's segment_path"), path)
    if code == lib.ET_ELAYOUT:
        mine = SEGMENT_LAYOUT
        theirs = int(info.get("layout_version", 0))
        shown = f"layout {theirs}" if theirs else "a layout this library cannot read"
        return LayoutMismatchError(code, (
            f"{what}: the shared recorder at {where} has {shown}, this edgetelemetry reads "
            f"layout {mine}: the producer and the device agent come from different "
            "edgetelemetry versions; install the agent's version here (or upgrade the agent, "
            "which then replaces the segment)"), path, theirs, mine)
    if code == lib.ET_EACCES:
        group = _group_of(path) if path is not None else None
        user = _user()
        join = (f"add this process's user {user!r} to group {group!r} (usermod -aG {group} "
                f"{user}, then log in again or restart the service) "
                if group is not None else "run it as a member of the segment's group ")
        return SegmentPermissionError(code, (
            f"{what}: permission denied on {where}: only the agent's user and the members of "
            f"the segment's group may attach; {join}"), path, group)
    if code == lib.ET_EPROCFULL:
        slots = info.get("max_processes")
        count = f"all {slots}" if slots else "all"
        return ProcessTableFullError(code, (
            f"{what}: {count} process slots of the shared recorder at {where} are taken; "
            "raise max_processes in the agent's configuration (and restart the agent), or "
            "stop processes that no longer record (a process's slot is freed when it exits)"),
            path)
    if code == lib.ET_ENOTOWNER:
        return NotOwnerError(code, (
            f"{what}: only the device agent that owns the shared recorder may do this (close "
            "windows, collect, reap)"), path)
    if code == lib.ET_EBUSY:
        pid = info.get("agent_pid") or "unknown"
        return AgentBusyError(code, (
            f"{what}: another agent (pid {pid}) owns the shared recorder at {where}: one agent "
            "per segment; stop that one first, or give this one another segment_path"), path)
    if code == lib.ET_ECONFIG:
        cfg = info.get("config") or {}
        shown = ", ".join(f"{k}={cfg[k]}" for k in CONFIG_FIELDS
                          if k in cfg and k not in ("min_exponent", "octaves"))
        return SegmentConfigError(code, (
            f"{what}: the shared recorder at {where} exists with another configuration "
            f"({shown}, max_processes={info.get('max_processes')}); configure the agent with "
            "those sizes, or set segment_replace to let it spool what the old segment holds "
            "and replace it (producers must attach again)"), path)
    if code == lib.ET_ETRUNCATED:
        size = info.get("file_bytes")
        want = info.get("expected_bytes")
        sizes = f" ({size} of {want} bytes)" if size is not None and want else ""
        return SegmentTruncatedError(code, (
            f"{what}: the shared recorder's file {where} is shorter than its layout{sizes}: "
            "it was truncated; the agent replaces it with a fresh segment, attach again then"),
            path)
    return LockTimeoutError(code, (
        f"{what}: a live process held the shared recorder's lock past the agent's timeout; "
        "nothing changed, try again"), path)


def segment_info(path: str) -> dict[str, Any]:
    """What ``et_segment_inspect`` could read of the file at ``path`` (read permission is
    enough): ``layout_version`` (0: not a segment), ``library_layout_version``,
    ``file_bytes``, ``expected_bytes``, and when its header checks out ``config``,
    ``max_processes``, ``agent_pid``, ``agent_running``, ``segment_id``, ``generation``;
    ``error`` is the inspection's own code (0: the header checks out)."""
    out = ffi.new("et_segment_info *")
    code = lib.et_segment_inspect(os.fsencode(path), out)
    info: dict[str, Any] = {
        "error": int(code),
        "layout_version": int(out.layout_version),
        "library_layout_version": int(out.library_layout_version),
        "file_bytes": int(out.file_bytes),
        "expected_bytes": int(out.expected_bytes),
    }
    if code == lib.ET_OK:
        info.update(
            config={key: int(getattr(out.config, key)) for key in CONFIG_FIELDS},
            max_processes=int(out.max_processes),
            agent_pid=int(out.agent_pid),
            agent_running=bool(out.agent_running),
            segment_id=bytes(ffi.buffer(out.segment_id, 16)).hex(),
            generation=int(out.generation),
        )
    return info


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


# et_shared_info's figures, as ``CoreRecorder.shared_info()`` keys (beside ``segment_id``).
SHARED_INFO_FIELDS = (
    "generation",
    "segment_bytes",
    "layout_version",
    "owner",
    "truncated",
    "max_processes",
    "processes",
    "process_slot",
    "agent_pid",
    "attaches",
    "attach_refusals",
    "slotless",
    "processes_reaped",
    "lock_steals",
    "journal_replays",
    "lock_timeouts",
    "truncations",
    "integrity_errors",
    "pending_seq",
)


@dataclass(frozen=True)
class SharedOptions:
    """``et_shared_options``: the segment file's mode and group (None: the agent's), its
    process slots, the agent's lock timeout, and whether to replace a segment that cannot be
    opened as asked (another configuration or layout, damaged, truncated)."""

    mode: int = 0o660
    gid: int | None = None
    max_processes: int = 64
    lock_timeout_ns: int = 100_000_000
    replace: bool = False


def _config(config: dict[str, int]) -> Any:
    cfg = ffi.new("et_config *")
    lib.et_config_default(cfg)
    for key, value in config.items():
        if key not in CONFIG_FIELDS:
            raise KeyError(f"{key!r} is not an et_config field")
        setattr(cfg, key, value)
    return cfg


class CoreRecorder:
    """One ``et_recorder``: private (``CoreRecorder(config)``), a device agent's shared one
    (``create_shared``) or a producer's handle on it (``attach``).  Not thread-safe by itself:
    the public Recorder serialises calls."""

    def __init__(self, config: dict[str, int]) -> None:
        """``config``: ``CONFIG_FIELDS`` to set; the others keep the core's defaults
        (``names_bytes`` and ``histogram_pages`` left at 0 scale with ``max_series``)."""
        out = ffi.new("et_recorder **")
        check(lib.et_recorder_new(_config(config), out), "et_recorder_new")
        self._own(out[0], None)

    def _own(self, ptr: Any, path: str | None) -> None:
        self._ptr: Any = ptr
        self.path = path  # a shared recorder's segment file
        self._stats = ffi.new("et_series_stats *")
        self._info = ffi.new("et_info *")
        self._shared = ffi.new("et_shared_info *")

    @classmethod
    def attach(cls, path: str) -> CoreRecorder:
        """A producer's handle on the shared recorder at ``path`` (``et_recorder_attach``)."""
        out = ffi.new("et_recorder **")
        check(lib.et_recorder_attach(os.fsencode(path), out), "attach", path)
        core = cls.__new__(cls)
        core._own(out[0], path)
        return core

    @classmethod
    def create_shared(cls, path: str, config: dict[str, int],
                      options: SharedOptions) -> CoreRecorder:
        """The agent's side: create the shared recorder at ``path``, or open and recover the
        one there (``et_recorder_create_shared``)."""
        opts = ffi.new("et_shared_options *")
        lib.et_shared_options_default(opts)
        opts.mode = options.mode
        opts.gid = -1 if options.gid is None else options.gid
        opts.max_processes = options.max_processes
        opts.lock_timeout_ns = options.lock_timeout_ns
        opts.flags = lib.ET_SHARED_REPLACE if options.replace else 0
        out = ffi.new("et_recorder **")
        check(lib.et_recorder_create_shared(os.fsencode(path), _config(config), opts, out),
              "create the shared recorder", path)
        core = cls.__new__(cls)
        core._own(out[0], path)
        return core

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
        check(code, f"register {what}", self.path)
        raise AssertionError("unreachable")  # pragma: no cover

    def series_names(self, series_id: int) -> tuple[str, str, str, str | None, str | None]:
        """(model, version, metric, dimension, unit) of a registered series; None for no
        dimension or unit."""
        buf = ffi.new("char[]", lib.ET_SERIES_NAMES_MAX)
        used = lib.et_series_names(self._ptr, series_id, buf, lib.ET_SERIES_NAMES_MAX)
        check(used, "et_series_names", self.path)
        model, version, metric, dimension, unit = (
            part.decode() for part in ffi.unpack(buf, used).split(b"\0")[:5]
        )
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
        check(lib.et_collect(self._ptr), "et_collect", self.path)

    def start_collector(self, period_ns: int) -> None:
        check(lib.et_collector_start(self._ptr, period_ns), "et_collector_start", self.path)

    def stop_collector(self) -> None:
        check(lib.et_collector_stop(self._ptr), "et_collector_stop", self.path)

    def info(self) -> dict[str, Any]:
        info = self._info
        check(lib.et_recorder_info(self._ptr, info), "et_recorder_info", self.path)
        out: dict[str, Any] = {key: getattr(info.config, key) for key in CONFIG_FIELDS}
        for key in INFO_FIELDS:
            out[key] = getattr(info, key)
        return out

    def edges(self, buckets_per_octave: int) -> tuple[int, ...]:
        buf = ffi.new("uint32_t[]", buckets_per_octave + 1)
        n = check(lib.et_recorder_edges(self._ptr, buf, len(buf)), "et_recorder_edges")
        return tuple(buf[0:n])

    def ack(self, seq: int) -> None:
        """The agent: window ``seq`` is stored durably (``et_window_ack``)."""
        check(lib.et_window_ack(self._ptr, seq), "acknowledge the window", self.path)

    def reap(self) -> int:
        """The agent: reap the slots of processes that are gone, now; how many."""
        return check(lib.et_shared_reap(self._ptr), "reap", self.path)

    def shared_info(self) -> dict[str, Any]:
        """``et_recorder_shared_info``: ``SHARED_INFO_FIELDS`` and ``segment_id`` (hex)."""
        info = self._shared
        check(lib.et_recorder_shared_info(self._ptr, info), "et_recorder_shared_info",
              self.path)
        out: dict[str, Any] = {key: int(getattr(info, key)) for key in SHARED_INFO_FIELDS}
        out["segment_id"] = bytes(ffi.buffer(info.segment_id, 16)).hex()
        return out

    def close_window(self) -> RawWindow:
        out = ffi.new("et_window **")
        check(lib.et_window_close(self._ptr, out), "close the window", self.path)
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
