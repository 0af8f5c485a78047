"""The public surface: what users import must stay importable, and nothing private leaks."""

import edgetelemetry as et


def test_public_names() -> None:
    expected = {
        "Recorder",
        "Histogram",
        "Group",
        "Timer",
        "Snapshot",
        "SeriesSnapshot",
        "HistogramLayout",
        "EdgeTelemetryError",
        "CoreError",
        "RecorderClosedError",
        "SnapshotFormatError",
        "__version__",
    }
    assert expected <= set(et.__all__)
    for name in et.__all__:
        assert hasattr(et, name), name
    assert not any(name.startswith("_") and name != "__version__" for name in et.__all__)


def test_errors_share_one_base() -> None:
    for cls in (et.CoreError, et.RecorderClosedError, et.SnapshotFormatError):
        assert issubclass(cls, et.EdgeTelemetryError)
    assert issubclass(et.SnapshotFormatError, ValueError)


def test_handle_surface() -> None:
    with et.Recorder() as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        for attr in ("record", "record_many", "time", "model", "version", "metric", "unit",
                     "dimension", "series_id", "attached"):
            assert hasattr(h, attr), attr
        assert not hasattr(h, "__dict__"), "handles use __slots__: no per-handle dict"


def test_package_is_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("edgetelemetry").joinpath("py.typed").is_file()
