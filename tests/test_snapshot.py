"""The snapshot format: a golden file pins it; the decoder refuses anything else clearly."""

import pathlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgetelemetry as et
from edgetelemetry.snapshot import HistogramLayout, SeriesSnapshot, Snapshot, SnapshotSource

GOLDEN = pathlib.Path(__file__).parent / "golden" / "snapshot-v1.0.msgpack"

LAYOUT = HistogramLayout(
    buckets_per_octave=8,
    mantissa_bits=12,
    min_exponent=-30,
    octaves=70,
    edges=(0, 371, 775, 1216, 1697, 2221, 2793, 3417, 4096),
)


def golden_snapshot() -> Snapshot:
    """A fixed snapshot exercising every field; its bytes are the golden file."""
    series = SeriesSnapshot(
        model="resnet18",
        version="1.0",
        metric="latency",
        dimension="camera-front",
        unit="ms",
        layout=LAYOUT,
        count=6,
        sum=12.5,
        min=-1.5,
        max=7.0,
        first_mono_ns=1_000_000_000,
        last_mono_ns=2_000_000_000,
        first_wall_ns=1_790_000_000_000_000_000,
        last_wall_ns=1_790_000_001_000_000_000,
        zero=1,
        pos={240: 2, 241: 1, 250: 1},
        neg={248: 1},
        rejected={"nan": 2},
        dropped={"ring_full": 3},
    )
    empty = SeriesSnapshot(
        model="yolo-v8", version="2", metric="confidence", dimension=None, unit=None,
        layout=LAYOUT,
    )
    return Snapshot(
        sources=(SnapshotSource("0123456789abcdef0123456789abcdef", "boot-1", 4, 4),),
        start_mono_ns=900_000_000,
        end_mono_ns=2_100_000_000,
        start_wall_ns=1_789_999_999_900_000_000,
        end_wall_ns=1_790_000_001_100_000_000,
        layout=LAYOUT,
        series=(series, empty),
        recorder={"memory_bytes": 470000, "records_drained": 9, "ring_high_water": 5},
    )


def test_golden_file_pins_the_format() -> None:
    data = GOLDEN.read_bytes()
    assert golden_snapshot().to_msgpack() == data
    assert Snapshot.from_msgpack(data) == golden_snapshot()


def test_golden_file_is_readable_as_plain_msgpack() -> None:
    raw = msgpack.unpackb(GOLDEN.read_bytes())
    assert raw["schema"] == [1, 0]
    assert raw["series"][0]["pos"] == [[240, [2, 1]], [250, [1]]]


def test_minor_version_is_readable_major_is_not() -> None:
    raw = golden_snapshot().to_dict()
    raw["schema"] = [1, 7]
    raw["future_field"] = "ignored"
    assert Snapshot.from_msgpack(msgpack.packb(raw)).series == golden_snapshot().series
    raw["schema"] = [2, 0]
    with pytest.raises(et.SnapshotFormatError, match="schema 2.0"):
        Snapshot.from_msgpack(msgpack.packb(raw))


def test_truncated_at_every_offset_is_refused() -> None:
    data = GOLDEN.read_bytes()
    for cut in range(len(data)):
        with pytest.raises(et.SnapshotFormatError):
            Snapshot.from_msgpack(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        Snapshot.from_msgpack(data)
    except et.SnapshotFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutations_are_refused_or_valid(data) -> None:
    raw = bytearray(GOLDEN.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        snap = Snapshot.from_msgpack(bytes(raw))
    except et.SnapshotFormatError:
        return
    for s in snap.series:  # whatever decodes is usable
        s.quantile(0.5)
        s.mean  # noqa: B018 - reading it must not raise


def test_round_trip_from_a_recorder() -> None:
    with et.Recorder(collector_period=None) as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        for v in (0.1, 1.0, 10.0, -3.0, 0.0):
            h.record(v)
        snap = rec.snapshot()
    again = Snapshot.from_msgpack(snap.to_msgpack())
    assert again == snap
    assert again.series[0].quantile(0.5) == snap.series[0].quantile(0.5)


def test_merge_of_windows_equals_recording_together() -> None:
    values_a = [1.0, 2.0, 3.5, -1.0]
    values_b = [100.0, 0.25, 0.0]
    with et.Recorder(collector_period=None) as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        for v in values_a:
            h.record(v)
        a = rec.snapshot()
        for v in values_b:
            h.record(v)
        b = rec.snapshot()
        for v in values_a + values_b:
            h.record(v)
        together = rec.snapshot()
    merged = a.merge(b)
    m, t = merged.series[0], together.series[0]
    assert (m.count, m.sum, m.min, m.max, m.zero, m.pos, m.neg) == (
        t.count, t.sum, t.min, t.max, t.zero, t.pos, t.neg)
    assert merged.sources[0].seq_first == 0 and merged.sources[0].seq_last == 1
    assert merged.start_mono_ns == a.start_mono_ns and merged.end_mono_ns == b.end_mono_ns
    assert Snapshot.from_msgpack(merged.to_msgpack()) == merged


def test_merge_refuses_different_layouts() -> None:
    with et.Recorder(collector_period=None) as r1, et.Recorder(
        collector_period=None, buckets_per_octave=64
    ) as r2:
        with pytest.raises(ValueError, match="layout"):
            r1.snapshot().merge(r2.snapshot())


def test_quantile_bounds() -> None:
    s = golden_snapshot().series[0]
    assert s.quantile(0.0) == s.min and s.quantile(1.0) == s.max
    with pytest.raises(ValueError):
        s.quantile(1.5)
    assert golden_snapshot().series[1].quantile(0.5) is None
