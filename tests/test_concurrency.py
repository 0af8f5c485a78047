"""Exact accounting with threads: every value passed is in a snapshot, rejected or dropped."""

import threading
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgetelemetry as et


def _totals(snaps: list[et.Snapshot]) -> tuple[int, int]:
    count = sum(s.count for snap in snaps for s in snap.series)
    dropped = sum(sum(s.dropped.values()) for snap in snaps for s in snap.series)
    return count, dropped


def _run_with_snapshots(rec: et.Recorder, snaps: list[et.Snapshot],
                        workers: list[threading.Thread], pause: float = 0.0) -> None:
    """Run ``workers`` to the end while another thread takes snapshots into ``snaps`` (every
    ``pause`` seconds), then take the last one."""
    stop = threading.Event()

    def snapshot_loop() -> None:
        while not stop.is_set():
            snaps.append(rec.snapshot())
            time.sleep(pause)

    snapper = threading.Thread(target=snapshot_loop)
    snapper.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    snapper.join()
    snaps.append(rec.snapshot())


def test_threads_with_concurrent_snapshots_account_exactly() -> None:
    threads, per_thread = 4, 50_000
    with et.Recorder(max_threads=4, ring_capacity=1024, collector_period=0.001) as rec:
        handles = [
            rec.histogram(f"metric-{i}", model="resnet18", version="1.0") for i in range(threads)
        ]
        snaps: list[et.Snapshot] = []

        def produce(h: et.Histogram) -> None:
            for i in range(per_thread):
                h.record(float(i))
                if i % 10_000 == 9_999:
                    # let a snapshot in while the others record: on a fast machine the
                    # producers can otherwise finish inside one GIL switch interval
                    seen, deadline = len(snaps), time.monotonic() + 5.0
                    while len(snaps) == seen and time.monotonic() < deadline:
                        time.sleep(0.0005)

        _run_with_snapshots(rec, snaps,
                            [threading.Thread(target=produce, args=(h,)) for h in handles])
    count, dropped = _totals(snaps)
    assert (count, dropped) == (threads * per_thread, 0)
    assert len(snaps) > 2
    for i in range(threads):
        per_series = [s for snap in snaps for s in snap.series if s.metric == f"metric-{i}"]
        n = sum(s.count + sum(s.dropped.values()) for s in per_series)
        assert n == per_thread


def test_short_lived_threads_reuse_rings_and_lose_nothing() -> None:
    rounds, per_thread = 2000, 20
    with et.Recorder(max_threads=2, collector_period=0.001) as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")

        def burst() -> None:
            for _ in range(per_thread):
                h.record(1.0)

        for _ in range(0, rounds, 4):  # four at a time, two rings: some must wait or drop
            batch = [threading.Thread(target=burst) for _ in range(4)]
            for t in batch:
                t.start()
            for t in batch:
                t.join()
        snap = rec.snapshot()
        info = rec.info()
    s = snap.series[0]
    assert (s.count, s.dropped) == (rounds * per_thread, {}), "threads without a ring lose nothing"
    assert snap.recorder["direct_values"] < rounds * per_thread // 2, (
        "rings of exited threads were reused")
    assert info["threads_active"] <= 1  # only threads still alive hold a ring


# ---- record_many: every value passed is counted once, from any number of threads ----

_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.sampled_from(["3.2", None, b"x", object(), 10**400, True]),
)


@st.composite
def _batch(draw: st.DrawFn) -> tuple[object, int]:
    """Something to pass to record_many, and how many values it holds."""
    kind = draw(st.sampled_from(["list", "tuple", "gen", "numpy", "numpy32", "big", "junk"]))
    if kind == "junk":
        return draw(st.sampled_from([None, 7, "abc", 2.5, object()])), 1
    if kind == "big":  # larger than any ring: aggregated by the caller, past the ring
        n = draw(st.integers(3000, 20_000))
        return np.full(n, draw(st.floats(-1e6, 1e6))), n
    values = draw(st.lists(_value, max_size=300))
    if kind == "list":
        return values, len(values)
    if kind == "tuple":
        return tuple(values), len(values)
    if kind == "gen":
        return (v for v in values), len(values)
    floats = [v for v in values if isinstance(v, float)]
    with np.errstate(over="ignore"):  # past float32's range: inf, rejected by the core
        array = np.array(floats, dtype=np.float64 if kind == "numpy" else np.float32)
    return array, len(floats)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_batch(), min_size=1, max_size=6), min_size=3, max_size=3))
def test_record_many_accounts_for_every_value_across_threads(work) -> None:
    # 3 threads, 2 rings: one thread records through the aggregate lock; small rings fill;
    # snapshots are taken while they record
    with et.Recorder(max_threads=2, ring_capacity=64, collector_period=0.001) as rec:
        handles = [rec.histogram(f"thread-{i}", model="resnet18", version="1.0")
                   for i in range(len(work))]
        snaps: list[et.Snapshot] = []
        errors: list[BaseException] = []

        def produce(h: et.Histogram, batches: list[tuple[object, int]]) -> None:
            try:
                for values, _ in batches:
                    h.record_many(values)
                    h.record(1.0)
            except BaseException as exc:  # record_many must never raise
                errors.append(exc)

        workers = [threading.Thread(target=produce, args=(h, b)) for h, b in zip(handles, work)]
        _run_with_snapshots(rec, snaps, workers, pause=0.0005)
    assert errors == []
    for i, batches in enumerate(work):
        passed = sum(n for _, n in batches) + len(batches)
        seen = sum(
            s.count + sum(s.rejected.values()) + sum(s.dropped.values())
            for snap in snaps for s in snap.series if s.metric == f"thread-{i}"
        )
        assert seen == passed, f"thread {i}: {seen} values accounted for, {passed} passed"
        assert not any(s.dropped for snap in snaps for s in snap.series), "nothing is dropped"
