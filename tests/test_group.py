"""Groups: one inference's metrics recorded with one call, all or none, never raising."""

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgetelemetry as et


@pytest.fixture
def rec():
    r = et.Recorder(collector_period=None)
    yield r
    r.close()


def _handles(rec: et.Recorder, model: str = "resnet18"):
    return (
        rec.histogram("latency", unit="ms", model=model, version="1"),
        rec.histogram("confidence", model=model, version="1"),
        rec.histogram("input-size", unit="bytes", model=model, version="1"),
    )


def _by_metric(snap: et.Snapshot) -> dict[str, et.SeriesSnapshot]:
    return {s.metric: s for s in snap.series}


def test_record_puts_one_value_in_each_series_in_order(rec) -> None:
    lat, conf, size = _handles(rec)
    g = rec.group(lat, conf, size)
    assert g.size == 3 and g.handles == (lat, conf, size) and g.attached
    g.record(3.5, 0.25, 4096)
    g.record(1.5, 0.75, 1024)
    s = _by_metric(rec.snapshot())
    assert (s["latency"].count, s["latency"].sum, s["latency"].max) == (2, 5.0, 3.5)
    assert (s["confidence"].count, s["confidence"].sum) == (2, 1.0)
    assert (s["input-size"].count, s["input-size"].sum, s["input-size"].min) == (2, 5120, 1024)


def test_record_since_times_into_the_first_series_in_its_unit(rec) -> None:
    lat, conf, size = _handles(rec)
    g = rec.group(lat, conf, size)
    start = g.start()
    assert isinstance(start, int)
    t0 = time.perf_counter_ns()
    time.sleep(0.02)
    g.record_since(start, 0.5, 100)
    elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
    s = _by_metric(rec.snapshot())
    assert s["latency"].count == 1
    # start() reads the clock perf_counter_ns reads (CLOCK_MONOTONIC), in ns
    assert 20.0 <= s["latency"].sum <= elapsed_ms + 5.0
    assert s["confidence"].sum == 0.5 and s["input-size"].sum == 100
    # a start from perf_counter_ns is the same clock
    g.record_since(time.perf_counter_ns() - 2_000_000, 0.5, 100)
    assert 2.0 <= _by_metric(rec.snapshot())["latency"].sum < 1000.0


@pytest.mark.parametrize("unit,scale", [("ns", 1e9), ("us", 1e6), ("s", 1.0)])
def test_record_since_units(rec, unit, scale) -> None:
    h = rec.histogram("wait", unit=unit, model="resnet18", version="1")
    g = rec.group(h)
    start = g.start()
    time.sleep(0.01)
    g.record_since(start)
    (s,) = [x for x in rec.snapshot().series if x.count]
    assert 0.01 * scale <= s.sum <= 5 * scale


def test_record_since_needs_a_time_unit_first(rec) -> None:
    lat, conf, size = _handles(rec)
    g = rec.group(conf, lat)
    with pytest.raises(ValueError, match="unit must be one of ns, us, ms, s"):
        g.record_since(g.start(), 1.0)
    g.record(0.5, 2.0)  # record() needs no time unit
    assert _by_metric(rec.snapshot())["latency"].sum == 2.0


def test_wrong_number_of_values_raises_and_records_nothing(rec) -> None:
    lat, conf, size = _handles(rec)
    g = rec.group(lat, conf, size)
    with pytest.raises(TypeError, match="takes 3 values, one per series, got 2"):
        g.record(1.0, 2.0)
    with pytest.raises(TypeError, match="takes 3 values"):
        g.record(1.0, 2.0, 3.0, 4.0)
    with pytest.raises(TypeError, match="takes start and 2 values"):
        g.record_since(g.start(), 0.5)
    with pytest.raises(TypeError, match="takes start and 2 values"):
        g.record_since()
    assert not any(s.count or s.rejected for s in rec.snapshot().series)


def test_bad_values_are_counted_in_their_own_series_and_the_rest_recorded(rec) -> None:
    lat, conf, size = _handles(rec)
    g = rec.group(lat, conf, size)
    g.record(1.0, "high", None)
    g.record(math.nan, 0.5, math.inf)
    g.record_since("yesterday", 0.25, 10)  # not a start(): the duration is counted, lost
    g.record_since(g.start(), object(), 10**400)
    s = _by_metric(rec.snapshot())
    assert (s["latency"].count, s["latency"].rejected) == (2, {"nan": 1, "type": 1})
    assert (s["confidence"].count, s["confidence"].rejected) == (2, {"type": 2})
    assert s["confidence"].sum == 0.75
    assert (s["input-size"].count, s["input-size"].rejected) == (1, {"inf": 1, "type": 2})


def test_same_handles_same_group_and_bad_groups_refused() -> None:
    rec = et.Recorder(collector_period=None, max_series=32)
    lat, conf, size = _handles(rec)
    assert rec.group(lat, conf) is rec.group(lat, conf)
    assert rec.group(conf, lat) is not rec.group(lat, conf)
    with pytest.raises(ValueError, match="1 to 16 handles, got 0"):
        rec.group()
    many = [rec.histogram("m", model="resnet18", version="1", dimension=f"d{i}")
            for i in range(15)]
    assert rec.group(*many, lat).size == 16
    with pytest.raises(ValueError, match="1 to 16 handles, got 17"):
        rec.group(*many, lat, conf)
    with pytest.raises(ValueError, match="each series may appear once"):
        rec.group(lat, conf, lat)
    with pytest.raises(TypeError, match="Histogram handles, got float"):
        rec.group(lat, 1.0)
    with et.Recorder(collector_period=None) as other:
        with pytest.raises(ValueError, match="belongs to another recorder"):
            rec.group(lat, other.histogram("x", model="resnet18", version="1"))
    rec.close()


def test_a_full_ring_keeps_every_group_whole() -> None:
    # 21 groups of 3 fit in 64 slots: the 22nd finds the ring full, its thread drains it and
    # pushes the group; no collector, and nothing is dropped
    with et.Recorder(collector_period=None, ring_capacity=64) as rec:
        lat, conf, size = _handles(rec)
        g = rec.group(lat, conf, size)
        for i in range(3000):
            g.record(float(i), 0.5, 10)
        snap = rec.snapshot()
        s = _by_metric(snap)
        for metric in ("latency", "confidence", "input-size"):
            assert s[metric].count == 3000 and not s[metric].dropped
        assert s["latency"].sum == sum(range(3000))
        assert snap.recorder["full_drains"] >= 3000 // 21 - 1


def test_after_close_a_group_does_nothing() -> None:
    rec = et.Recorder(collector_period=None)
    lat, conf, size = _handles(rec)
    g = rec.group(lat, conf, size)
    g.record(1.0, 0.5, 10)
    last = rec.close()
    assert last is not None and _by_metric(last)["latency"].count == 1
    assert not g.attached
    g.record(1.0, 0.5, 10)  # no crash, no effect: the C recorder is gone
    g.record_since(g.start(), 0.5, 10)
    with pytest.raises(et.RecorderClosedError):
        rec.group(lat)


def test_groups_from_many_threads_stay_whole() -> None:
    import threading

    with et.Recorder(collector_period=0.001, max_threads=8) as rec:
        lat, conf, size = _handles(rec)
        g = rec.group(lat, conf, size)

        def work(k: int) -> None:
            for i in range(20000):
                g.record(float(k), 1.0, float(i % 7))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s = _by_metric(rec.snapshot())
        made = 4 * 20000
        counts = {m: s[m].count + sum(s[m].dropped.values()) for m in s}
        assert counts == {"latency": made, "confidence": made, "input-size": made}
        # all or none: each series kept exactly the same inferences
        assert s["latency"].count == s["confidence"].count == s["input-size"].count
        assert s["confidence"].sum == s["confidence"].count


def test_repr_names_the_series(rec) -> None:
    lat, conf, _ = _handles(rec)
    assert repr(rec.group(lat, conf)) == (
        "Group(Histogram('latency', unit='ms', model='resnet18', version='1'), "
        "Histogram('confidence', model='resnet18', version='1'))"
    )


def test_the_fast_path_refuses_a_table_without_record_group() -> None:
    import ctypes

    from edgetelemetry._native._fastpath import GroupBase, SeriesBase

    version_1 = (ctypes.c_uint32 * 16)(1)  # abi_version 1: no record_group entry
    with pytest.raises(RuntimeError, match="et_api version 1, need 2 or later"):
        GroupBase(ctypes.addressof(version_1), 1, (0,), 1.0)
    with pytest.raises(RuntimeError, match="et_api version 1, need 2 or later"):
        SeriesBase(ctypes.addressof(version_1), 1, 0)
    with pytest.raises(ValueError, match="must be non-zero"):
        GroupBase(0, 1, (0,), 1.0)
    with et.Recorder(collector_period=None) as rec:
        api, address = rec.native_handle()
        for ids in ((), tuple(range(17)), [0]):
            with pytest.raises(ValueError, match="tuple of 1 to 16 ids"):
                GroupBase(api, address, ids, 1.0)
        with pytest.raises((ValueError, OverflowError)):  # by the width of a C long
            GroupBase(api, address, (2**32,), 1.0)
        with pytest.raises(OverflowError):
            GroupBase(api, address, (-1,), 1.0)


def test_a_value_whose_conversion_closes_the_recorder_does_not_crash() -> None:
    class ClosesTheRecorder:
        def __init__(self, rec: et.Recorder) -> None:
            self.rec = rec

        def __float__(self) -> float:
            self.rec.close()
            return 1.0

        def __index__(self) -> int:
            self.rec.close()
            return 1

    rec = et.Recorder(collector_period=None)
    g = rec.group(*_handles(rec))
    g.record(1.0, ClosesTheRecorder(rec), "bad")  # the recorder is gone when C would record
    assert rec.closed and not g.attached
    rec = et.Recorder(collector_period=None)
    g = rec.group(*_handles(rec))
    g.record_since(ClosesTheRecorder(rec), "bad", 2.0)  # start, converted by __index__
    assert rec.closed and not g.attached


_ANY_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_ANY_VALUE, _ANY_VALUE, _ANY_VALUE), max_size=200))
def test_every_value_of_every_call_is_accounted_for(rows) -> None:
    """Whatever the values: per series, recorded + rejected == calls, and the kept values'
    count, sum, min and max are exactly those of the finite numbers given."""
    with et.Recorder(collector_period=None, ring_capacity=1024) as rec:
        handles = _handles(rec)
        g = rec.group(*handles)
        for row in rows:
            g.record(*row)
        snap = _by_metric(rec.snapshot())
    for i, h in enumerate(handles):
        if not rows:
            assert h.metric not in snap, "an idle series is not listed"
            continue
        s = snap[h.metric]
        kept = []
        for row in rows:
            if isinstance(row[i], str):  # not a number: rejected (float('0') would parse it)
                continue
            try:
                x = float(row[i])
            except (TypeError, ValueError, OverflowError):
                continue
            if math.isfinite(x):
                kept.append(x)
        assert s.count + sum(s.rejected.values()) == len(rows)
        assert s.count == len(kept) and not s.dropped
        if kept:
            assert (s.min, s.max) == (min(kept), max(kept))
            expected = sum(kept)  # the collector adds in record order: the same doubles
            assert s.sum == expected or (math.isnan(s.sum) and math.isnan(expected))


def test_ints_record_exactly_as_float_converts_them(rec) -> None:
    # exact ints take a direct conversion in the binding; subclasses and other numbers go
    # through __float__ / __index__: every one must land as float(v) would
    import enum

    class Size(enum.IntEnum):
        BATCH = 8

    small = [0, -7, True, Size.BATCH]  # exact sum 2
    big = [2**53 + 1, 2**63 + 12345, 10**300]  # rounded as float() rounds them
    lat, conf, size = _handles(rec)
    g = rec.group(conf, size)
    for v in small:
        conf.record(v)
    for v, w in zip(small, big):
        g.record(v, w)
    size.record(big[-1])
    s = _by_metric(rec.snapshot())
    assert (s["confidence"].count, s["confidence"].sum) == (7, 2.0 + float(sum(small[:3])))
    assert (s["confidence"].min, s["confidence"].max) == (-7.0, 8.0)
    assert s["input-size"].count == 4 and s["input-size"].rejected == {}
    assert (s["input-size"].min, s["input-size"].max) == (float(big[0]), float(big[2]))
