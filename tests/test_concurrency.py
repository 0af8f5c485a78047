"""Exact accounting with threads: every record made is in a snapshot or counted as dropped."""

import threading
import time

import edgetelemetry as et


def _totals(snaps: list[et.Snapshot]) -> tuple[int, int]:
    count = sum(s.count for snap in snaps for s in snap.series)
    dropped = sum(sum(s.dropped.values()) for snap in snaps for s in snap.series)
    return count, dropped


def test_threads_with_concurrent_snapshots_account_exactly() -> None:
    threads, per_thread = 4, 50_000
    with et.Recorder(max_threads=4, ring_capacity=1024, collector_period=0.001) as rec:
        handles = [
            rec.histogram(f"metric-{i}", model="resnet18", version="1.0") for i in range(threads)
        ]
        snaps: list[et.Snapshot] = []
        stop = threading.Event()

        def snapshot_loop() -> None:
            while not stop.is_set():
                snaps.append(rec.snapshot())

        def produce(h: et.Histogram) -> None:
            for i in range(per_thread):
                h.record(float(i))
                if i % 10_000 == 9_999:
                    # let a snapshot in while the others record: on a fast machine the
                    # producers can otherwise finish inside one GIL switch interval
                    seen, deadline = len(snaps), time.monotonic() + 5.0
                    while len(snaps) == seen and time.monotonic() < deadline:
                        time.sleep(0.0005)

        snapper = threading.Thread(target=snapshot_loop)
        snapper.start()
        workers = [threading.Thread(target=produce, args=(h,)) for h in handles]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stop.set()
        snapper.join()
        snaps.append(rec.snapshot())
    count, dropped = _totals(snaps)
    assert count + dropped == threads * per_thread
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
    assert s.count + s.dropped.get("no_ring", 0) + s.dropped.get("ring_full", 0) == (
        rounds * per_thread
    )
    assert s.count > rounds * per_thread // 2, "rings of exited threads were reused"
    assert info["threads_active"] <= 1  # only threads still alive hold a ring
