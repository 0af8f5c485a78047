"""record_many under hypothesis: whatever is passed, from any number of threads, every value is
counted once (count + rejected + dropped == values passed) and it never raises."""

from __future__ import annotations

import threading

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_concurrency import run_with_snapshots

import edgetelemetry as et

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
        run_with_snapshots(rec, snaps, workers, pause=0.0005)
    assert errors == []
    for i, batches in enumerate(work):
        passed = sum(n for _, n in batches) + len(batches)
        seen = sum(
            s.count + sum(s.rejected.values()) + sum(s.dropped.values())
            for snap in snaps for s in snap.series if s.metric == f"thread-{i}"
        )
        assert seen == passed, f"thread {i}: {seen} values accounted for, {passed} passed"
        assert not any(s.dropped for snap in snaps for s in snap.series), "nothing is dropped"
