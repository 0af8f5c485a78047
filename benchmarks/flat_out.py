"""Python recording flat out into a default ``Recorder()``: the figures issue 11 compares with
the core before it.  Run as a script, it prints one JSON object; ``test_no_loss.py`` runs it
alternately against this tree and a build of the last commit before issue 11
(``before_issue_11.py``), so both are measured in the same benchmark run.

It uses only what both versions have (``Recorder()``, ``histogram``, ``record``,
``snapshot``), and times records in chunks of 16,384 (eight default rings), taking the best
chunk of 25, so another tenant's burst on this shared machine does not count:

- ``flat_ns``: one thread recording flat out into a default Recorder() (the ring fills
  every 2,048 records: before issue 11 that dropped, now the thread drains it);
- ``nonfull_ns``: the same loop into a ring that never fills (drained between chunks);
- ``flat2_ns``: two threads recording flat out, 8,192 records each per chunk;
- ``kept``/``dropped`` (and ``kept2``/``dropped2``): 1,000,000 records flat out, from one
  thread and from two, and how many the windows kept.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

import edgetelemetry as et

CHUNK = 1 << 14
REPEAT = 25


def _best_chunk(record: Callable[[float], None], between: Callable[[], Any] | None) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        if between is not None:
            between()
        t0 = time.perf_counter_ns()
        for _ in range(CHUNK):
            record(3.2)
        best = min(best, (time.perf_counter_ns() - t0) / CHUNK)
    return best


def _histogram(rec: et.Recorder, metric: str) -> Any:
    return rec.histogram(metric, unit="ms", model="resnet18", version="1.0")


def _two_threads(rec: et.Recorder, per_thread: int, rounds: int) -> float:
    """Best ns per record of ``rounds`` rounds of two threads x ``per_thread`` records: from
    the first thread's start to the last one's end (each thread reads the clock itself: the
    GIL may hand a waiting thread its turn after the others have finished)."""
    handles = [_histogram(rec, f"thread-{i}") for i in range(2)]
    start = threading.Barrier(2)
    spans: list[list[tuple[int, int]]] = [[], []]

    def work(i: int, record: Callable[[float], None]) -> None:
        for _ in range(rounds):
            start.wait()
            t0 = time.perf_counter_ns()
            for _ in range(per_thread):
                record(3.2)
            spans[i].append((t0, time.perf_counter_ns()))

    threads = [threading.Thread(target=work, args=(i, h.record)) for i, h in enumerate(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return min(
        (max(a[1], b[1]) - min(a[0], b[0])) / (2 * per_thread) for a, b in zip(*spans)
    )


def _kept(snap: et.Snapshot) -> tuple[int, int]:
    return (sum(s.count for s in snap.series),
            sum(sum(s.dropped.values()) for s in snap.series))


def measure() -> dict[str, float]:
    out: dict[str, float] = {}
    with et.Recorder() as rec:
        out["flat_ns"] = _best_chunk(_histogram(rec, "latency").record, None)
    with et.Recorder(ring_capacity=1 << 15, collector_period=None) as rec:
        out["nonfull_ns"] = _best_chunk(_histogram(rec, "latency").record, rec.snapshot)
    with et.Recorder() as rec:
        out["flat2_ns"] = _two_threads(rec, CHUNK // 2, REPEAT)
    with et.Recorder() as rec:
        record = _histogram(rec, "latency").record
        t0 = time.perf_counter_ns()
        for _ in range(1_000_000):
            record(3.2)
        out["million_ns"] = (time.perf_counter_ns() - t0) / 1e6
        out["kept"], out["dropped"] = _kept(rec.snapshot())
    with et.Recorder() as rec:
        t0 = time.perf_counter_ns()
        _two_threads(rec, 500_000, 1)
        out["million2_ns"] = (time.perf_counter_ns() - t0) / 1e6
        out["kept2"], out["dropped2"] = _kept(rec.snapshot())
    return out


if __name__ == "__main__":
    print(json.dumps(measure()))
