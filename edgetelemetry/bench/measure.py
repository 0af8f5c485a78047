"""Measurement for ``edgetelemetry bench``: timing, statistics, the machine, the figures.

Standard library only; numpy, prometheus_client and OpenTelemetry are used when installed.
Every figure is timed in rounds interleaved with its baseline, so drift (frequency scaling, a
neighbour on a shared core) lands on both; a ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import time
import timeit
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable

from .stats import median, quantile, trimmed_mean, trimmed_mean_ci

__all__ = [
    "C_LOOP",
    "Figure",
    "Progress",
    "Settings",
    "Timed",
    "interleave",
    "machine",
    "median",
    "micro_figures",
    "quantile",
    "trimmed_mean",
    "trimmed_mean_ci",
]


# ---- the machine ------------------------------------------------------------------------

# ARM's "CPU implementer"/"CPU part" codes for the cores edge boards carry, so an aarch64
# /proc/cpuinfo without a "model name" still names its CPU.
_ARM_PARTS = {
    (0x41, 0xB76): "ARM1176",
    (0x41, 0xC07): "Cortex-A7",
    (0x41, 0xC08): "Cortex-A8",
    (0x41, 0xC09): "Cortex-A9",
    (0x41, 0xC0F): "Cortex-A15",
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD04): "Cortex-A35",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD42): "Cortex-A78AE",
    (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x4E, 0x004): "NVIDIA Carmel",
}


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


def _cpuinfo() -> dict[str, str]:
    """The first value of each key in /proc/cpuinfo."""
    out: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip().lower(), value.strip())
    return out


def cpu_model(info: dict[str, str] | None = None) -> str:
    info = _cpuinfo() if info is None else info
    for key in ("model name", "cpu model", "cpu", "processor"):
        value = info.get(key, "")
        if value and not value.isdigit():
            return value
    try:
        part = (int(info["cpu implementer"], 0), int(info["cpu part"], 0))
    except (KeyError, ValueError):
        part = None
    if part is not None:
        return _ARM_PARTS.get(part, f"ARM implementer {part[0]:#x} part {part[1]:#x}")
    return platform.processor() or "unknown"


def machine(note: str | None = None) -> dict[str, Any]:
    """What the figures were measured on: enough to tell two runs' machines apart."""
    from .._version import __version__

    info = _cpuinfo()
    arch = platform.machine()
    cpu = cpu_model(info)
    # qemu-user reports the guest's architecture from uname but the host's /proc/cpuinfo
    host_x86 = "vendor_id" in info and info["vendor_id"] in ("GenuineIntel", "AuthenticAMD")
    emulated = host_x86 and not arch.startswith(("x86", "i386", "i686", "amd64", "AMD64"))
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    libc, libc_version = platform.libc_ver()
    out: dict[str, Any] = {
        "cpu": cpu,
        "arch": arch,
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "board": _read("/sys/firmware/devicetree/base/model") or None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "package_version": __version__,
        "os": platform.platform(terse=True),
        "kernel": platform.release(),
        "libc": f"{libc} {libc_version}".strip() or None,
        "emulated": emulated,
        "note": note,
    }
    if emulated:
        out["cpu"] = f"{arch} emulated by qemu-user on {cpu}"
    versions = {}
    for name, dist in (
        ("numpy", "numpy"),
        ("prometheus_client", "prometheus_client"),
        ("opentelemetry-sdk", "opentelemetry-sdk"),
        ("onnxruntime", "onnxruntime"),
        ("cffi", "cffi"),
    ):
        v = _dist_version(dist)
        if v:
            versions[name] = v
    out["libraries"] = versions
    return out


def _dist_version(dist: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# ---- progress ---------------------------------------------------------------------------


class Progress:
    """One line per step on a stream (stderr): ``[ 3/11   4.2s] record(v) ...``."""

    def __init__(self, stream: Any, total: int, enabled: bool = True) -> None:
        self.stream = stream
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.t0 = time.monotonic()

    def step(self, what: str) -> None:
        self.done += 1
        self.say(f"[{self.done:>2}/{self.total}] {what}")

    def say(self, text: str) -> None:
        if self.enabled and self.stream is not None:
            elapsed = time.monotonic() - self.t0
            print(f"bench {elapsed:6.1f}s {text}", file=self.stream, flush=True)


# ---- figures ----------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure: per-round values in ns per ``unit``, and how it compares."""

    key: str
    label: str
    unit: str  # what one value is per: "call", "value", "record", "window"
    kind: str  # "baseline", "edgetelemetry" or "peer"
    samples: list[float] = field(default_factory=list)
    baseline: str | None = None  # key of the figure it is compared to
    ratios: list[float] = field(default_factory=list)  # per-round figure / baseline
    number: int = 0  # operations per round
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def ratio(self) -> float | None:
        return median(self.ratios) if self.ratios else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "kind": self.kind, "unit": f"ns/{self.unit}"}
        if self.skipped:
            out["skipped"] = self.skipped
            return out
        s = self.samples
        out.update(
            median=round(self.median, 4),
            p25=round(quantile(s, 0.25), 4),
            p75=round(quantile(s, 0.75), 4),
            min=round(min(s), 4),
            max=round(max(s), 4),
            rounds=len(s),
            number=self.number,
            baseline=self.baseline,
            ratio=None if self.ratio is None else round(self.ratio, 4),
            better="lower",
        )
        if self.ratios:
            out["ratio_p25"] = round(quantile(self.ratios, 0.25), 4)
            out["ratio_p75"] = round(quantile(self.ratios, 0.75), 4)
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Settings:
    rounds: int  # timed rounds per figure
    round_s: float  # target length of one timed round
    drain_values: int  # records per drain measurement
    quick: bool


DEFAULT = Settings(rounds=15, round_s=0.03, drain_values=1 << 18, quick=False)
QUICK = Settings(rounds=7, round_s=0.006, drain_values=1 << 15, quick=True)


class Timed:
    """A statement timed in chunks of at most ``chunk`` runs, ``prepare`` run before each
    chunk outside the timing (a drain: rings stay as warm and as empty as a drained ring)."""

    def __init__(
        self,
        stmt: str,
        env: dict[str, Any],
        *,
        chunk: int = 1 << 30,
        prepare: Callable[[], object] | None = None,
        per: int = 1,
    ) -> None:
        self.timer = timeit.Timer(stmt, globals=env)
        self.chunk = chunk
        self.prepare = prepare
        self.per = per  # units (values) per run of stmt
        self.number = 1

    def run(self, number: int) -> float:
        """ns per unit over ``number`` runs, gc off (as timeit does)."""
        total = 0.0
        left = number
        enabled = gc.isenabled()
        gc.disable()
        try:
            while left > 0:
                n = min(left, self.chunk)
                if self.prepare is not None:
                    self.prepare()
                total += self.timer.timeit(n)
                left -= n
        finally:
            if enabled:
                gc.enable()
        return total / (number * self.per) * 1e9

    def calibrate(self, seconds: float) -> None:
        """Pick ``number`` so one round takes about ``seconds``."""
        n = 1
        while True:
            t0 = time.perf_counter()
            self.run(n)
            took = time.perf_counter() - t0
            if took >= seconds / 10 or n >= 1 << 24:
                break
            n *= 4 if took < seconds / 100 else 2
        self.number = max(1, int(n * seconds / max(took, 1e-9)))


def interleave(timed: dict[str, Timed], settings: Settings) -> dict[str, list[float]]:
    """Run every statement once per round, rotating the order, for ``settings.rounds``."""
    for t in timed.values():
        t.calibrate(settings.round_s)
        t.run(max(1, t.number // 10))  # warm
    keys = list(timed)
    out: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(settings.rounds):
        order = keys[r % len(keys):] + keys[: r % len(keys)]
        for k in order:
            out[k].append(timed[k].run(timed[k].number))
    return out


def _noop(value: float) -> None:
    pass


class _EmptyContext:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        pass


def _values(n: int, seed: int) -> Any:
    """``n`` lognormal float64 values (latencies spread over decades): numpy when
    installed, else ``array('d')``; both are read in place by ``record_many``."""
    try:
        import numpy as np
    except ImportError:
        rng = random.Random(seed)
        return array("d", (rng.lognormvariate(0.0, 2.0) for _ in range(n)))
    return np.random.default_rng(seed).lognormal(0.0, 2.0, n)


C_LOOP = 4096  # calls per C loop of the C record path's figure


def micro_figures(settings: Settings, progress: Progress, skip_peers: bool = False) -> list[Figure]:
    """Every per-call, per-value and per-window figure, with baselines and peers."""
    from ..recording import Recorder
    from .cloops import CLoops

    figures: list[Figure] = []

    def add(*figs: Figure) -> None:
        figures.extend(figs)

    # A ring of 16 k slots drained between chunks of 8 k records: warm in cache and never
    # full, as a ring the collector keeps drained is.  Without the drain the default ring
    # fills in microseconds at these call rates and the figure would be the drop path.
    chunk = 1 << 13
    rec = Recorder(ring_capacity=1 << 14, max_threads=2, collector_period=None)
    try:
        lat = rec.histogram("latency", unit="ms", model="bench-model", version="1")
        drain = rec.drain
        loops = CLoops(rec)
        sid = lat.series_id
        env: dict[str, Any] = {
            "lat": lat,
            "noop": _noop,
            "empty": _EmptyContext(),
            "lib": loops.lib,
            "NULL": loops.null,
            "rec_ptr": loops.rec,
            "sid": sid,
            "group": rec.group(
                lat, *(rec.histogram(m, model="bench-model", version="1")
                       for m in ("confidence", "input-size", "batch-size"))),
        }

        progress.step("Python record(), time(), group.record() and the C record path, with "
                      "their baselines")
        timed = {
            "baseline.empty_call": Timed("noop(3.2)", env),
            "baseline.c_call": Timed("abs(3.2)", env),
            "baseline.cffi_noop": Timed("lib.bench_nothing(NULL)", env),
            # et_record's shape (pointer, uint32, number) through the same function pointer
            # call as bench_record_one, to a function that returns at once
            "baseline.cffi_shape": Timed("lib.bench_noop_one(rec_ptr, sid, 3.2)", env),
            "baseline.empty_with": Timed("with empty: pass", env),
            "record": Timed("lat.record(3.2)", env, chunk=chunk, prepare=drain),
            "time": Timed("with lat.time(): pass", env, chunk=chunk, prepare=drain),
            # one inference's 4 metrics (4 ring slots per call)
            "group": Timed("group.record(3.2, 0.5, 4096, 1)", env, chunk=chunk // 4,
                            prepare=drain),
            "c_record_cffi": Timed(
                "lib.bench_record_one(rec_ptr, sid, 3.2)", env, chunk=chunk, prepare=drain
            ),
            # the C path as a C caller sees it: loops of 4096 calls in C (loops.c),
            # et_record against a no-op of its shape; 8 k records between drains
            "baseline.c_noop": Timed(f"lib.bench_noop_loop(rec_ptr, sid, 3.2, {C_LOOP})", env,
                                      per=C_LOOP),
            "c_record": Timed(f"lib.bench_record_loop(rec_ptr, sid, 3.2, {C_LOOP})", env,
                               chunk=chunk // C_LOOP, prepare=drain, per=C_LOOP),
        }
        s = interleave(timed, settings)
        base_empty = Figure("baseline.empty_call", "baseline: empty Python call", "call",
                            "baseline", s["baseline.empty_call"])
        base_c = Figure("baseline.c_call", "baseline: METH_O C call (abs)", "call", "baseline",
                        s["baseline.c_call"])
        base_cffi = Figure("baseline.cffi_noop", "baseline: cffi no-op C call", "call",
                           "baseline", s["baseline.cffi_noop"])
        base_with = Figure("baseline.empty_with", "baseline: empty with-block", "call",
                           "baseline", s["baseline.empty_with"])
        base_shape = Figure("baseline.cffi_shape", "baseline: cffi call, et_record's shape",
                            "call", "baseline", s["baseline.cffi_shape"],
                            extra={"call": "a no-op of et_record's shape, via a pointer"})
        record = Figure("record", "record(v)", "call", "edgetelemetry", s["record"],
                        baseline="baseline.empty_call")
        timer = Figure("time", "with time(): (block timed)", "call", "edgetelemetry", s["time"],
                       baseline="baseline.empty_with")
        group = Figure("group", "group.record(4 values)", "call", "edgetelemetry", s["group"],
                       baseline="record", extra={"values_per_call": 4})
        c_cffi = Figure("c_record_cffi", "C et_record via cffi", "call", "edgetelemetry",
                        s["c_record_cffi"], baseline="baseline.cffi_shape")
        for f in (record, timer, group, c_cffi):
            f.ratios = [a / b for a, b in zip(f.samples, s[f.baseline or ""])]
        base_c_noop = Figure("baseline.c_noop", "baseline: no-op C call (loop in C)", "call",
                             "baseline", s["baseline.c_noop"])
        c_record = Figure("c_record", "C et_record (loop in C)", "call", "edgetelemetry",
                          s["c_record"], baseline="baseline.c_noop",
                          extra={"calls_per_loop": C_LOOP})
        c_record.ratios = [a / b for a, b in zip(s["c_record"], s["baseline.c_noop"])]
        for f, key in ((base_empty, "baseline.empty_call"), (base_c, "baseline.c_call"),
                       (base_cffi, "baseline.cffi_noop"), (base_shape, "baseline.cffi_shape"),
                       (base_with, "baseline.empty_with"),
                       (base_c_noop, "baseline.c_noop"), (record, "record"), (timer, "time"),
                       (group, "group"), (c_cffi, "c_record_cffi"), (c_record, "c_record")):
            f.number = timed[key].number
        add(base_empty, base_c, base_cffi, base_shape, base_with, base_c_noop, record, timer,
            group, c_cffi, c_record)

        progress.step("record_many() of 1024 values, against record() per value")
        batch = _values(1024, 3)
        env["batch"] = batch
        timed = {
            # 4 batches half fill a 8 k ring; drained before each 4
            "record_many": Timed("lat.record_many(batch)", env, chunk=4, prepare=drain,
                                  per=1024),
            "record": Timed("lat.record(3.2)", env, chunk=chunk, prepare=drain),
        }
        s = interleave(timed, settings)
        many = Figure("record_many", "record_many(1024 values)", "value", "edgetelemetry",
                      s["record_many"], baseline="record", number=timed["record_many"].number,
                      extra={"buffer": type(batch).__module__ + "." + type(batch).__name__})
        many.ratios = [a / b for a, b in zip(s["record_many"], s["record"])]
        add(many)
        snap = rec.snapshot()
        lost = sum(sum(x.dropped.values()) for x in snap.series)
        if lost:
            progress.say(f"warning: {lost} records dropped while timing record paths")
        record.extra["dropped"] = lost
    finally:
        rec.close()

    progress.step(f"drain + aggregate of {settings.drain_values} records")
    add(*_drain_figures(settings))

    progress.step("snapshot() + build_heartbeat() of 16 series")
    add(_window_figure(settings))

    if skip_peers:
        return figures
    progress.step("prometheus_client and OpenTelemetry, against record()")
    add(*_peer_figures(settings, record))
    return figures


def _drain_figures(settings: Settings) -> list[Figure]:
    from ..recording import Recorder

    n = settings.drain_values
    values = _values(n, 2)
    view = memoryview(values)
    rec = Recorder(ring_capacity=max(64, n), max_threads=1, collector_period=None)
    drain: list[float] = []
    copy: list[float] = []
    try:
        lat = rec.histogram("latency", unit="ms", model="bench-model", version="1")
        for r in range(settings.rounds + 1):
            taken = lat.record_many(values)
            t0 = time.perf_counter_ns()
            rec.drain()
            t1 = time.perf_counter_ns()
            view.tobytes()  # the least a drain must do: read the values once
            t2 = time.perf_counter_ns()
            if r and taken == n:  # the first round warms
                drain.append((t1 - t0) / n)
                copy.append((t2 - t1) / n)
        counted = rec.snapshot().series[0].count
    finally:
        rec.close()
    base = Figure("baseline.copy", "baseline: copy the values once", "record", "baseline", copy,
                  number=n)
    fig = Figure("drain", "drain + aggregate (et_collect)", "record", "edgetelemetry", drain,
                 baseline="baseline.copy", number=n,
                 extra={"records_per_s": round(1e9 / median(drain)) if drain else 0,
                        "counted": counted})
    fig.ratios = [a / b for a, b in zip(drain, copy) if b > 0]
    if not drain:
        fig.skipped = "the ring did not take every record"
    return [base, fig]


def _window_figure(settings: Settings, heartbeat_interval_s: float = 60.0) -> Figure:
    """What the agent pays per heartbeat: close a window of 16 busy series, build the
    request.  Compared to the heartbeat interval: the share of one core it takes."""
    from ..heartbeat import DeviceIdentity, build_heartbeat
    from ..recording import Recorder

    identity = DeviceIdentity(device_name="bench-device", fleet_name="bench-fleet")
    values = _values(2000, 4)
    snap_ns: list[float] = []
    build_ns: list[float] = []
    total: list[float] = []
    metrics = counted = 0
    with Recorder(collector_period=None, ring_capacity=1 << 15) as rec:  # 16 x 2000 fit
        handles = [
            rec.histogram(f"metric-{i}", model=f"model-{i % 4}", version="1") for i in range(16)
        ]
        build_heartbeat([rec.snapshot()], identity)  # loads botocore's model once
        for r in range(settings.rounds + 1):
            for h in handles:
                h.record_many(values)
            t0 = time.perf_counter_ns()
            snap = rec.snapshot()
            t1 = time.perf_counter_ns()
            params = build_heartbeat([snap], identity)
            t2 = time.perf_counter_ns()
            if r:
                snap_ns.append(float(t1 - t0))
                build_ns.append(float(t2 - t1))
                total.append(float(t2 - t0))
            metrics = sum(len(m["ModelMetrics"]) for m in params["Models"])
            counted = sum(x.count for x in snap.series)
    fig = Figure("window", "snapshot() + build_heartbeat(), 16 series", "window",
                 "edgetelemetry", total, number=1)
    fig.extra = {
        "snapshot_ns": round(median(snap_ns)),
        "build_heartbeat_ns": round(median(build_ns)),
        "heartbeat_metrics": metrics,
        "values_per_window": counted,
        "heartbeat_interval_s": heartbeat_interval_s,
        "core_share_at_interval": median(total) / (heartbeat_interval_s * 1e9),
    }
    return fig


def _peer_figures(settings: Settings, record: Figure) -> list[Figure]:
    """prometheus_client and OpenTelemetry SDK histograms, each interleaved with record()."""
    from ..recording import Recorder

    out: list[Figure] = []
    peers: dict[str, tuple[str, str, dict[str, Any]] | str] = {}
    try:
        import prometheus_client

        registry = prometheus_client.CollectorRegistry()
        h = prometheus_client.Histogram("latency_ms", "latency", ["model", "version"],
                                        registry=registry).labels("bench-model", "1")
        peers["prometheus"] = ("prometheus_client Histogram.observe", "h.observe(3.2)", {"h": h})
    except ImportError:
        peers["prometheus"] = "prometheus_client is not installed"
    provider = None
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        otel = provider.get_meter("bench").create_histogram("latency", unit="ms")
        attrs = {"model": "bench-model", "version": "1"}
        peers["otel"] = ("OpenTelemetry SDK Histogram.record", "otel.record(3.2, attrs)",
                         {"otel": otel, "attrs": attrs})
    except ImportError:
        peers["otel"] = "opentelemetry-sdk is not installed"

    rec = Recorder(ring_capacity=1 << 14, max_threads=2, collector_period=None)
    try:
        lat = rec.histogram("latency", unit="ms", model="bench-model", version="1")
        for key, peer in peers.items():
            if isinstance(peer, str):
                out.append(Figure(f"peer.{key}", key, "call", "peer", skipped=peer))
                continue
            label, stmt, env = peer
            env = dict(env, lat=lat)
            timed = {
                key: Timed(stmt, env),
                "record": Timed("lat.record(3.2)", env, chunk=1 << 13,
                                 prepare=rec.drain),
            }
            s = interleave(timed, settings)
            fig = Figure(f"peer.{key}", label, "call", "peer", s[key], baseline="record",
                         number=timed[key].number)
            fig.ratios = [a / b for a, b in zip(s[key], s["record"])]
            out.append(fig)
    finally:
        rec.close()
        if provider is not None:
            provider.shutdown()
    return out
