"""The public surface: what users import must stay importable, and nothing private leaks."""

import importlib

import pytest

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
        "RegistrationError",
        "SeriesLimitError",
        "NamesFullError",
        "UnitConflictError",
        "NameClashError",
        "SharedRecorderError",
        "NoSegmentError",
        "NotASegmentError",
        "LayoutMismatchError",
        "SegmentPermissionError",
        "ProcessTableFullError",
        "NotOwnerError",
        "AgentBusyError",
        "SegmentConfigError",
        "SegmentTruncatedError",
        "LockTimeoutError",
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
    for cls in (et.SeriesLimitError, et.NamesFullError, et.UnitConflictError,
                et.NameClashError):
        assert issubclass(cls, et.RegistrationError)
    assert issubclass(et.RegistrationError, et.EdgeTelemetryError)
    assert issubclass(et.RegistrationError, ValueError)  # what registration raised before
    # a shared recorder's errors: one class per core code, all CoreErrors with the path
    shared = (et.NoSegmentError, et.NotASegmentError, et.LayoutMismatchError,
              et.SegmentPermissionError, et.ProcessTableFullError, et.NotOwnerError,
              et.AgentBusyError, et.SegmentConfigError, et.SegmentTruncatedError,
              et.LockTimeoutError)
    assert len(set(shared)) == 10
    for cls in shared:
        assert issubclass(cls, et.SharedRecorderError)
    assert issubclass(et.SharedRecorderError, et.CoreError)


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


def test_recorder_surface() -> None:
    for attr in ("histogram", "group", "snapshot", "drain", "close", "native_handle", "info",
                 "layout", "relative_error", "recorder_id", "closed", "attach", "attached",
                 "segment_path", "shared_info"):
        assert hasattr(et.Recorder, attr), attr


def test_drain_keeps_the_window_open() -> None:
    with et.Recorder(collector_period=None) as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        h.record(2.0)
        rec.drain()
        h.record(4.0)
        (series,) = rec.snapshot().series
        assert (series.count, series.sum) == (2, 6.0)
        rec.close()
        with pytest.raises(et.RecorderClosedError):
            rec.drain()


# The public names of each room, where docs/ and users import them from (docs/architecture.md
# lists the moves of issue 13).  A name removed or moved breaks this on purpose.
ROOMS = {
    "edgetelemetry.agent": {"Agent", "AgentClosedError", "AgentConfig", "ConfigError",
                            "TickResult"},
    "edgetelemetry.agent.config": {"AgentConfig", "ConfigError", "CONFIG_ENV", "ENV_PREFIX",
                                   "SAGEMAKER_EDGE_KEYS", "default_spool_dir"},
    "edgetelemetry.agent.daemon": {"DeviceAgent", "check_options", "main", "parser",
                                   "EXIT_CONFIG"},
    "edgetelemetry.agent.segment_config": {"SEGMENT_KEYS", "default_segment_path",
                                           "segment_gid"},
    "edgetelemetry.recording": {"Recorder", "SharedRecorder", "Histogram", "Group", "Timer"},
    "edgetelemetry.agent.sender": {"Outcome", "SendResult", "Sender", "full_jitter",
                                   "server_date"},
    "edgetelemetry.agent.spool": {"Spool", "Record", "SpoolError", "SpoolClosedError",
                                  "SpoolLockedError", "SpoolPermissionError",
                                  "RecordTooLargeError", "FRAME_HEADER_SIZE", "FRAME_MAGIC"},
    "edgetelemetry.agent.credentials": {"CredentialsError", "IotCredentialProvider",
                                        "IotCredentials", "split_iot_credentials_url",
                                        "DEFAULT_LIFETIME_S"},
    "edgetelemetry.heartbeat": {"DeviceIdentity", "ModelState", "PayloadOptions",
                                "SplitLimits", "build_heartbeat", "split_heartbeat",
                                "request_bytes", "validate_input", "validate_send_heartbeat",
                                "validate_shape", "HeartbeatValidationError",
                                "HeartbeatTooLargeError", "MIN_TIMESTAMP"},
    "edgetelemetry.otlp": {"OtlpIdentity", "OtlpMissingError", "build_metrics_request",
                           "request_json", "agent_metric_name", "exponential_mapping",
                           "ExponentialMapping", "auto_scale", "aligned_scale"},
    "edgetelemetry.recording.naming": {"NameRule", "check_series_names",
                                       "heartbeat_metric_name", "STAT_SUFFIXES"},
    "edgetelemetry.snapshot": {"Snapshot", "SeriesSnapshot", "SnapshotSource",
                               "HistogramLayout", "SCHEMA_VERSION"},
    "edgetelemetry.server": {"EndpointServer", "Store", "FleetStore", "StoreError",
                             "apply_registry", "main", "register_main", "Credential",
                             "load_credentials_file"},
    "edgetelemetry.server.store": {"FleetStore", "Store", "StoreError", "SchemaOutOfDate",
                                   "open_store", "open_read_only", "apply_registry",
                                   "Compactor", "RollupPoint", "LatestPoint", "MetricPoint",
                                   "CompactionReport", "SCHEMA_VERSION", "DEFAULT_STORE",
                                   "DEFAULT_KEEP_RAW", "DEFAULT_KEEP_HOURLY"},
    "edgetelemetry.server.fleet": {"fleet_status", "latency_series", "open_read_only",
                                   "render_text", "DEFAULT_OFFLINE_AFTER"},
    "edgetelemetry.bench": {"main", "run", "format_table", "SCHEMA"},
}


@pytest.mark.parametrize("module", sorted(ROOMS))
def test_room_surface(module: str) -> None:
    mod = importlib.import_module(module)
    exported = set(mod.__all__)
    assert ROOMS[module] <= exported, ROOMS[module] - exported
    for name in exported:
        assert hasattr(mod, name), name
    assert not any(name.startswith("_") for name in exported)
