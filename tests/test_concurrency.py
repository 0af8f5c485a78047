"""Exact accounting with threads: every value passed is in a snapshot, rejected or dropped.

Standard library only: scripts/build-wheels.sh runs this file on each architecture's own
CPython (no numpy, no hypothesis there); tests/test_record_many.py adds property tests."""

import array
import threading
import time

import edgetelemetry as et


def _totals(snaps: list[et.Snapshot]) -> tuple[int, int]:
    count = sum(s.count for snap in snaps for s in snap.series)
    dropped = sum(sum(s.dropped.values()) for snap in snaps for s in snap.series)
    return count, dropped


def run_with_snapshots(rec: et.Recorder, snaps: list[et.Snapshot],
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

        run_with_snapshots(rec, snaps,
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


def test_record_many_from_threads_with_and_without_rings_keeps_every_value() -> None:
    # 3 threads, 2 rings (one thread aggregates through the lock), rings of 64 that batches
    # overflow, junk among the numbers, snapshots running: every value is counted once
    batches = [
        lambda: [float(i) for i in range(5000)],  # past the ring: aggregated by the caller
        lambda: array.array("d", range(100)),  # in place, through the ring
        lambda: (x / 3 for x in range(300)),  # a generator
        lambda: [1.0, "x", None, 2, float("nan")],  # 2 rejected here, NaN by the core
        lambda: "not a batch",  # 1 rejected
    ]
    passed = 5000 + 100 + 300 + 5 + 1
    with et.Recorder(max_threads=2, ring_capacity=64, collector_period=0.001) as rec:
        handles = [rec.histogram(f"thread-{i}", model="resnet18", version="1.0")
                   for i in range(3)]
        snaps: list[et.Snapshot] = []

        def produce(h: et.Histogram) -> None:
            for _ in range(20):
                for batch in batches:
                    h.record_many(batch())

        run_with_snapshots(rec, snaps, [threading.Thread(target=produce, args=(h,))
                                        for h in handles], pause=0.0005)
    for h in handles:
        mine = [s for snap in snaps for s in snap.series if s.metric == h.metric]
        total = sum(s.count + sum(s.rejected.values()) + sum(s.dropped.values()) for s in mine)
        assert total == 20 * passed
        assert sum(s.count for s in mine) == 20 * (5000 + 100 + 300 + 2)
        assert not any(s.dropped for s in mine)
