"""Recorder and handle behaviour: recording never raises, everything is counted, windows tile."""

import array
import asyncio
import math
import time

import pytest

import edgetelemetry as et


@pytest.fixture
def rec():
    r = et.Recorder(collector_period=None)
    yield r
    r.close()


def _only(snap: et.Snapshot) -> et.SeriesSnapshot:
    (series,) = [s for s in snap.series if s.count or s.rejected or s.dropped]
    return series


def test_exact_stats_and_bad_values_counted(rec) -> None:
    h = rec.histogram("score", model="resnet18", version="1.0")
    values = [0.5, -2.0, 0.0, 1e-300, 5e-324, 1e300, 7, True]
    for v in values:
        h.record(v)
    for bad in (math.nan, math.inf, -math.inf, "3.2", None, object(), 10**400):
        h.record(bad)  # never raises
    s = _only(rec.snapshot())
    accepted = [float(v) for v in values]
    assert s.count == len(accepted)
    assert s.sum == math.fsum(accepted) or s.sum == sum(accepted)
    assert s.min == -2.0 and s.max == 1e300
    assert s.zero == 3  # 0.0, 1e-300 and the subnormal are below the tracked range
    assert s.rejected == {"nan": 1, "inf": 2, "type": 4}
    assert sum(s.pos.values()) + sum(s.neg.values()) + s.zero == s.count


def test_a_full_ring_loses_nothing() -> None:
    # no collector, the smallest ring: the recording thread drains its own ring when full
    with et.Recorder(ring_capacity=64, collector_period=None) as small:
        h = small.histogram("latency", unit="ms", model="resnet18", version="1.0")
        for i in range(100_000):
            h.record(float(i))
        snap = small.snapshot()
        s = _only(snap)
        assert (s.count, s.dropped, s.min, s.max) == (100_000, {}, 0.0, 99_999.0)
        assert s.sum == sum(range(100_000))
        assert snap.recorder["full_drains"] >= 100_000 // 64 - 1
        assert small.info()["full_drains"] == snap.recorder["full_drains"]


def test_record_many_buffers(rec) -> None:
    np = pytest.importorskip("numpy")
    h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    assert h.record_many(np.arange(100, dtype=np.float64)) == 100
    assert h.record_many(np.arange(10, dtype=np.float32)) == 10
    assert h.record_many(array.array("d", [1.0, 2.0])) == 2
    assert h.record_many([1, 2.5]) == 2
    assert h.record_many(np.arange(6, dtype=np.float64).reshape(2, 3)) == 6
    assert h.record_many(np.arange(20, dtype=np.float64)[::2]) == 10  # strided: copied
    assert h.record_many([]) == 0
    assert h.record_many(["a", "b"]) == 0  # not numbers: one rejection each, no raise
    assert h.record_many(None) == 0  # not a batch: one rejection
    s = _only(rec.snapshot())
    assert s.count == 100 + 10 + 2 + 2 + 6 + 10
    assert s.rejected == {"type": 3}


def test_record_many_counts_every_value_once(rec) -> None:
    np = pytest.importorskip("numpy")
    h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")

    def gen():
        yield 1.0
        yield "x"
        yield 2

    def broken():
        yield 5.0
        raise RuntimeError("the producer failed")

    cases = [  # (values, numbers passed to the core, values rejected as no number)
        (["a", "b", "c"], 0, 3),
        ([1, "a", 2.5, None, 10**400, math.nan], 3, 3),  # NaN: a number, rejected by the core
        (gen(), 2, 1),
        (broken(), 1, 1),  # what it yielded, and its failure as one rejected value
        ((x / 2 for x in range(7)), 7, 0),
        (np.arange(12, dtype=np.float32).reshape(3, 4), 12, 0),
        (np.arange(12, dtype=">f8").reshape(3, 4), 12, 0),  # big-endian: no fast path
        (np.arange(6, dtype=np.float16), 6, 0),
        (np.array([1.5, "a"], dtype=object), 1, 1),
        (np.float64(3.0), 1, 0),  # a 0-d buffer: one value
        (array.array("i", [1, 2, 3]), 3, 0),
        (range(5), 5, 0),
        ({1.0: "a", 2.0: "b"}, 2, 0),
        (3.5, 0, 1),
        ("3.5", 0, 1),
        (b"\x01\x02", 2, 0),  # bytes are a buffer of unsigned bytes
        (object(), 0, 1),
    ]
    numbers = rejected = 0
    for values, taken, bad in cases:
        assert h.record_many(values) == taken, values
        numbers += taken
        rejected += bad
    s = _only(rec.snapshot())
    assert s.count + s.rejected.get("nan", 0) == numbers
    assert s.rejected == {"type": rejected, "nan": 1}


def test_record_many_of_any_size_keeps_everything() -> None:
    np = pytest.importorskip("numpy")
    with et.Recorder(ring_capacity=64, collector_period=None) as small:
        h = small.histogram("latency", unit="ms", model="resnet18", version="1.0")
        assert h.record_many([1.0] * 100) == 100
        values = np.random.default_rng(3).lognormal(0.0, 1.0, 200_000)
        assert h.record_many(values) == 200_000
        for chunk in np.array_split(values, 7):
            h.record_many(chunk)
        snap = small.snapshot()
        s = _only(snap)
        assert s.count == 100 + 400_000 and not s.dropped
        assert s.max == values.max() and s.min == min(1.0, values.min())
        assert snap.recorder["direct_values"] >= 400_000 - 7 * 64


def test_time_context_decorator_and_async(rec) -> None:
    h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    with h.time():
        time.sleep(0.02)

    @h.time()
    def work() -> str:
        time.sleep(0.01)
        return "done"

    @h.time()
    async def infer() -> str:
        await asyncio.sleep(0.03)
        return "async done"

    assert work() == "done"
    assert asyncio.run(infer()) == "async done"
    s = _only(rec.snapshot())
    assert s.count == 3
    assert 10 <= s.min and s.max >= 30, "the coroutine's await is inside its timing"
    assert s.max < 1000


def test_time_needs_a_time_unit(rec) -> None:
    h = rec.histogram("input-size", unit="bytes", model="resnet18", version="1.0")
    with pytest.raises(ValueError, match="unit"):
        h.time()


def test_same_names_same_series_and_unit_conflict(rec) -> None:
    a = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    b = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    assert a is b
    c = rec.histogram("latency", unit="ms", model="resnet18", version="1.0", dimension="cam")
    assert c.series_id != a.series_id
    with pytest.raises(et.UnitConflictError, match="registered with unit 'ms'"):
        rec.histogram("latency", unit="s", model="resnet18", version="1.0")
    with pytest.raises(ValueError, match="registered with unit 'ms'"):
        rec.histogram("latency", model="resnet18", version="1.0")


def test_series_limit_is_a_registration_error() -> None:
    with et.Recorder(max_series=2, collector_period=None) as small:
        small.histogram("aaaa", model="resnet18", version="1")
        small.histogram("bbbb", model="resnet18", version="1")
        with pytest.raises(et.SeriesLimitError, match="larger max_series"):
            small.histogram("cccc", model="resnet18", version="1")
        small.histogram("aaaa", model="resnet18", version="1")  # finding one is no registration


def test_names_limit_says_names_bytes_not_max_series() -> None:
    with et.Recorder(max_series=8, names_bytes=64, collector_period=None) as small:
        small.histogram("latency", model="resnet18", version="1.0", dimension="camera-front")
        with pytest.raises(et.NamesFullError, match="names_bytes=64.*larger names_bytes") as exc:
            small.histogram("confidence", model="resnet18", version="1.0",
                            dimension="camera-front")
        assert "max_series" not in str(exc.value)
        assert isinstance(exc.value, et.RegistrationError) and isinstance(exc.value, ValueError)


def test_thousands_of_series_with_long_names() -> None:
    # issue 11: the defaults scale names and pages with max_series
    n = 4096
    with et.Recorder(max_series=n, collector_period=None) as big:
        handles = [
            big.histogram(f"{('latency', 'preprocess', 'confidence', 'queue-wait')[i % 4]}"
                          f"-stage-{i // 4:04d}", unit="ms" if i % 4 == 0 else None,
                          model="resnet50-imagenet-int8-tensorrt", version="2.1.0",
                          dimension=f"camera-front/roi-{i % 97}/class-pedestrian")
            for i in range(n)
        ]
        info = big.info()
        assert info["series"] == n
        assert info["memory_bytes"] < 32 << 20, info["memory_bytes"]
        for h in handles[::256]:
            h.record(1.5)
        snap = big.snapshot()
        assert [s.metric for s in snap.series] == [h.metric for h in handles[::256]]
        assert all(s.dimension == h.dimension and s.unit == h.unit
                   for s, h in zip(snap.series, handles[::256]))
        with pytest.raises(et.SeriesLimitError):
            big.histogram("one-more", model="resnet18", version="1.0")


def test_heartbeat_names_cannot_clash() -> None:
    with et.Recorder(collector_period=None) as rec:
        rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        with pytest.raises(et.NameClashError, match="series 'latency' \\(unit 'ms'\\)") as exc:
            rec.histogram("latency-ms", model="resnet18", version="1.0")
        assert exc.value.existing == ("resnet18", "1.0", "latency", None, "ms")
        # the other way round, and the same names elsewhere: fine
        rec.histogram("queue-ms", model="resnet18", version="1.0")
        with pytest.raises(et.NameClashError, match="'queue-ms' \\(no unit\\)"):
            rec.histogram("queue", unit="ms", model="resnet18", version="1.0")
        rec.histogram("latency-ms", model="resnet18", version="2.0")
        rec.histogram("latency-ms", model="resnet18", version="1.0", dimension="gpu")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ring_capacity": 1000},
        {"ring_capacity": 32},
        {"max_series": 0},
        {"max_threads": -1},
        {"buckets_per_octave": 4},
        {"collector_period": 0.0},
        {"max_series": True},
    ],
)
def test_bad_configuration_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        et.Recorder(**kwargs)


def test_windows_tile_and_sequence(rec) -> None:
    h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    h.record(1.0)
    a = rec.snapshot()
    b = rec.snapshot()
    assert (a.seq, b.seq) == (0, 1)
    assert a.end_mono_ns == b.start_mono_ns and a.end_wall_ns == b.start_wall_ns
    assert a.start_mono_ns <= a.end_mono_ns
    assert a.sources[0].recorder_id == rec.recorder_id
    s = a.series[0]
    assert a.start_mono_ns <= s.first_mono_ns <= s.last_mono_ns <= a.end_mono_ns
    assert abs(s.last_wall_ns - time.time_ns()) < 60e9
    assert b.series == (), "an idle window lists no series"
    assert b.get("resnet18", "1.0", "latency") is None


def test_default_memory_fits_a_small_device(rec) -> None:
    info = rec.info()
    assert info["max_threads"] == 4 and info["max_series"] == 16
    assert info["memory_bytes"] <= 512 * 1024
    assert info["relative_error"] < 0.01
    assert rec.snapshot().recorder["memory_bytes"] == info["memory_bytes"]


def test_close_returns_last_window_and_stops_recording() -> None:
    rec = et.Recorder()
    h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    h.record(2.0)
    last = rec.close()
    assert last is not None and last.series[0].count == 1
    h.record(3.0)  # a no-op, not a crash
    assert h.record_many([1.0]) == 0
    assert not h.attached
    assert rec.close() is None
    with pytest.raises(et.RecorderClosedError):
        rec.snapshot()
    with pytest.raises(et.RecorderClosedError):
        rec.histogram("other", model="resnet18", version="1.0")


def test_close_with_nothing_recorded_returns_none() -> None:
    rec = et.Recorder()
    rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    assert rec.close() is None


def test_background_collector_drains_without_snapshot() -> None:
    with et.Recorder(ring_capacity=64, collector_period=0.001) as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        for i in range(2000):
            h.record(float(i))
            if i % 32 == 0:
                time.sleep(0.002)
        snap = rec.snapshot()
        assert snap.series[0].count == 2000 and not snap.series[0].dropped
        assert snap.recorder["records_drained"] - snap.recorder["full_drains"] * 64 > 0, (
            "the collector drained while we recorded")


def test_timer_lets_exceptions_through_and_still_records(rec) -> None:
    h = rec.histogram("latency", unit="us", model="resnet18", version="1.0")
    with pytest.raises(KeyError):
        with h.time():
            raise KeyError("inference failed")
    timer = h.time()
    assert isinstance(timer, et.Timer)
    with timer:
        pass
    with timer:  # a Timer may be reused
        pass
    s = _only(rec.snapshot())
    assert s.count == 3 and s.min >= 0


def test_timer_after_close_does_nothing() -> None:
    rec = et.Recorder()
    h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    rec.close()
    with h.time():
        pass
    assert h.time()(lambda: 5)() == 5


def test_past_its_histogram_pages_a_window_keeps_octave_precision() -> None:
    # 2 pages per window: values over many octaves go coarse; count, sum, min and max stay
    # exact, every value is in a bucket of its octave, and the snapshot encodes and decodes
    values = [1.5 * 2.0**e for e in range(-10, 30)] * 3
    with et.Recorder(histogram_pages=2, collector_period=None) as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        assert h.record_many(values) == len(values)
        snap = rec.snapshot()
        assert rec.info()["histogram_pages"] == 2
    s = _only(snap)
    assert (s.count, s.sum, s.min, s.max) == (len(values), sum(values), min(values), max(values))
    assert 0 < s.coarse <= s.count
    assert snap.recorder["pool_exhausted"] > 0 and snap.recorder["pages_high_water"] == 2
    assert sum(s.pos.values()) == s.count
    octaves = {index // s.layout.buckets_per_octave for index in s.pos}
    assert len(octaves) == 40, "each value keeps its octave"
    assert et.Snapshot.from_msgpack(snap.to_msgpack()) == snap
