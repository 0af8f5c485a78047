"""Import the package, record one value, read it back."""

import edgetelemetry as et


def test_import_record_snapshot() -> None:
    with et.Recorder() as rec:
        lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        lat.record(3.2)
        snap = rec.snapshot()
    (series,) = snap.series
    assert (series.model, series.version, series.metric, series.unit) == (
        "resnet18",
        "1.0",
        "latency",
        "ms",
    )
    assert series.count == 1 and series.sum == 3.2 and series.min == series.max == 3.2
