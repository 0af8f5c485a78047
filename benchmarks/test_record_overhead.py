"""What a record costs in Python, against baselines and peer libraries, in one run.

Targets (issue 2): record() at least 15x faster than prometheus_client observe and 100x
faster than OpenTelemetry record; record_many at most 2 ns per value for n >= 1024 (gated as
a ratio: a tenth of one record() call per value); drain + aggregate at least 100 M records/s
(reported here, gated by instruction count in csrc/bench).  A group records an inference's 4
metrics for less than 4 record() calls (issue 6).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import kept_and_dropped, ns_per_call, report, run_threads

import edgetelemetry as et
from edgetelemetry.bench.cloops import CLoops

N = 200_000


@pytest.fixture
def handle():
    # a ring larger than one timing run, drained between runs: record() is timed on its normal
    # path, never on the full-ring path (where the thread drains its ring: benchmarks/
    # test_no_loss.py times that)
    with et.Recorder(ring_capacity=1 << 15, collector_period=None) as rec:
        yield rec, rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        snap = rec.snapshot()
        assert not snap.recorder["full_drains"], "timed the full-ring path"


RECORD_RUN = 1 << 14


def record_ns(rec: et.Recorder, env: dict) -> float:
    return ns_per_call("lat.record(3.2)", env, RECORD_RUN, repeat=25, setup=rec.drain)


def noop(value: float) -> None:
    pass


def test_record_vs_baselines_and_peers(handle) -> None:
    rec, lat = handle
    loops = CLoops(rec)  # the bench's own cffi module: a cffi call that does nothing
    env = {"lat": lat, "noop": noop, "lib": loops.lib, "NULL": loops.null}
    record = record_ns(rec, env)
    empty = ns_per_call("noop(3.2)", env, N)
    c_noop = ns_per_call("abs(3.2)", env, N)
    cffi_noop = ns_per_call("lib.bench_nothing(NULL)", env, N)
    report("python record()", record)
    report("baseline: empty Python call", empty)
    report("baseline: METH_O C call (abs)", c_noop)
    report("baseline: cffi API-mode no-op call", cffi_noop)
    assert record < cffi_noop, "record() must beat a single cffi call: that is its design"

    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    h = prometheus_client.Histogram("latency_ms", "latency", registry=registry)
    env["h"] = h
    prom = ns_per_call("h.observe(3.2)", env, N // 10)
    record = min(record, record_ns(rec, env))  # interleave against drift
    report("peer: prometheus_client observe", prom, ratio=f"{prom / record:.1f}x")
    assert prom / record >= 15, f"record() is only {prom / record:.1f}x faster than prometheus"


def test_record_vs_opentelemetry(handle) -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    rec, lat = handle
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    otel = provider.get_meter("bench").create_histogram("latency", unit="ms")
    attrs = {"model": "resnet18", "version": "1.0"}
    env = {"lat": lat, "otel": otel, "attrs": attrs}
    o = ns_per_call("otel.record(3.2, attrs)", env, N // 20)
    r = record_ns(rec, env)
    report("peer: OpenTelemetry SDK record", o, ratio=f"{o / r:.0f}x")
    provider.shutdown()
    assert o / r >= 100, f"record() is only {o / r:.0f}x faster than OpenTelemetry"


def _record_many_and_record(np: Any, n: int) -> tuple[float, float]:
    """ns per value of ``record_many`` of ``n`` float64, and ns of one ``record``."""
    with et.Recorder(ring_capacity=1 << 13, collector_period=None) as rec:
        lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        values = np.random.default_rng(1).random(n)
        env = {"lat": lat, "values": values}
        # 4 batches half fill a cache-warm ring, as a regularly drained ring is; drain between
        # repeats, outside the timing
        per_batch = ns_per_call("lat.record_many(values)", env, 4, repeat=300,
                                setup=rec.drain)
        snap = rec.snapshot()
        assert not snap.series[0].dropped and not snap.recorder["full_drains"]
        one = ns_per_call("lat.record(3.2)", env, 4096, repeat=25, setup=rec.drain)
    return per_batch / n, one


def test_record_many_per_value() -> None:
    np = pytest.importorskip("numpy")
    n = 1024
    # a neighbour's burst on the shared machine can push one timing over: time both once more
    # and keep the better pair (a real regression fails both)
    best: tuple[float, float] | None = None
    for _ in range(2):
        per_value, one = _record_many_and_record(np, n)
        if best is None or per_value / one < best[0] / best[1]:
            best = (per_value, one)
        if per_value <= one / 10:
            break
    assert best is not None
    per_value, one = best
    report("python record_many(), n=1024", per_value, "ns/value")
    assert per_value <= one / 10, f"record_many costs {per_value:.2f} ns/value vs {one:.1f} ns"


def test_group_records_an_inference_cheaper_than_separate_calls() -> None:
    # the point of a group: one call for an inference's 4 metrics costs less than 4 record()
    with et.Recorder(ring_capacity=1 << 15, collector_period=None) as rec:
        handles = [rec.histogram(m, model="resnet18", version="1.0")
                   for m in ("latency", "confidence", "input-size", "batch-size")]
        lat, conf, size, batch = handles
        env = {"group": rec.group(*handles), "lat": lat, "conf": conf, "size": size,
               "batch": batch}
        run = RECORD_RUN // 4  # 4 ring slots per run: a quarter of the ring between drains
        group = ns_per_call("group.record(3.2, 0.5, 4096, 1)", env, run, repeat=25,
                            setup=rec.drain)
        four = ns_per_call("lat.record(3.2); conf.record(0.5); size.record(4096); "
                           "batch.record(1)", env, run, repeat=25, setup=rec.drain)
        snap = rec.snapshot()
        assert not snap.recorder["full_drains"], "timed the full-ring path"
    report("python group.record(), 4 values", group, ratio_to_4_records=f"{group / four:.2f}")
    assert group < four, f"group.record of 4 values {group:.1f} ns vs 4 x record {four:.1f} ns"


def test_drain_and_aggregate_throughput() -> None:
    np = pytest.importorskip("numpy")
    n = 1 << 20
    with et.Recorder(ring_capacity=n, collector_period=None) as rec:
        lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        values = np.random.default_rng(2).lognormal(0.0, 2.0, n)
        best = float("inf")
        for _ in range(5):
            assert lat.record_many(values) == n
            t0 = time.perf_counter_ns()
            rec.drain()
            best = min(best, time.perf_counter_ns() - t0)
        assert rec.snapshot().series[0].count == 5 * n
    report("drain + aggregate", best / n, "ns/record", rate=f"{n / best * 1e3:.0f} M/s")


def test_snapshot_and_encode(handle) -> None:
    rec, lat = handle
    for i in range(15):
        h = rec.histogram(f"metric-{i}", model="resnet18", version="1.0")
        for v in range(1, 2000):
            h.record(v * 0.37)
    t0 = time.perf_counter_ns()
    snap = rec.snapshot()
    data = snap.to_msgpack()
    report("snapshot() + to_msgpack, 16 series", (time.perf_counter_ns() - t0) / 1e3, "us",
           bytes=len(data))


def _sustained_trial(seconds: float, per_tick: int) -> tuple[int, int, float, int]:
    """2 threads x ``per_tick`` records per 1 ms tick into a default Recorder: (count, dropped,
    elapsed, ring high-water)."""
    with et.Recorder() as rec:
        handles = [rec.histogram(f"thread-{i}", model="resnet18", version="1.0")
                   for i in range(2)]

        def produce(h: et.Histogram) -> None:
            start = time.perf_counter()
            for tick in range(int(seconds * 1000)):
                for _ in range(per_tick):
                    h.record(1.0)
                delay = start + (tick + 1) / 1000 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)

        elapsed = run_threads([threading.Thread(target=produce, args=(h,))
                               for h in handles]) / 1e9
        snap = rec.snapshot()
    count, dropped = kept_and_dropped(snap)
    assert count + dropped == 2 * per_tick * int(seconds * 1000)
    return count, dropped, elapsed, snap.recorder["ring_high_water"]


def test_no_drops_at_one_million_per_second_from_two_threads() -> None:
    """Default sizes, 2 threads x 500 k records/s for 2 s.  Nothing is dropped by design since
    issue 11: a ring the collector has not drained in time is drained by the thread that
    fills it, however long another tenant stalls the collector.  One trial, every time."""
    count, dropped, elapsed, high_water = _sustained_trial(2.0, 500)
    report("sustained 2 threads, default sizes", count / elapsed / 1e6, "M rec/s",
           dropped=dropped, high_water=high_water)
    assert dropped == 0, f"{dropped} records dropped"
    assert count == 2 * 500 * 2000
