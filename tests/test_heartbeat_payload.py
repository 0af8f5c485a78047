"""The payload builder: the documented mapping, purity, and that its output always validates."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import botocore.session
import pytest
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgetelemetry
from edgetelemetry.heartbeat import (
    DeviceIdentity,
    HeartbeatValidationError,
    ModelState,
    PayloadOptions,
    build_heartbeat,
    sanitize_agent_version,
    validate_send_heartbeat,
)
from edgetelemetry.recording.naming import (
    DIMENSION_RULE,
    METRIC_RULE,
    MODEL_RULE,
    STAT_SUFFIXES,
    UNIT_RULE,
    VERSION_RULE,
    check_series_names,
    heartbeat_metric_name,
)
from edgetelemetry.snapshot import HistogramLayout, SeriesSnapshot, Snapshot, SnapshotSource

UTC = timezone.utc
LAYOUT = HistogramLayout(
    buckets_per_octave=4, mantissa_bits=2, min_exponent=-20, octaves=60, edges=(0, 1, 2, 3, 4)
)
IDENTITY = DeviceIdentity("jetson-01", "line-3")
T0 = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z in ns
SECOND = 1_000_000_000
EMPTY_STATS = ("count", "sum", "rejected", "dropped")
_MODEL = botocore.session.get_session().get_service_model("sagemaker-edge")


def dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1e6, UTC)


def series(
    values: Sequence[float],
    *,
    model: str = "resnet18",
    version: str = "1.0",
    metric: str = "latency",
    dimension: str | None = None,
    unit: str | None = "ms",
    last_wall_ns: int | None = None,
    rejected: dict[str, int] | None = None,
    dropped: dict[str, int] | None = None,
) -> SeriesSnapshot:
    """A series as the recorder would report ``values``: exact count/sum/min/max, buckets."""
    pos: dict[int, int] = {}
    neg: dict[int, int] = {}
    zero = 0
    for v in values:
        index = LAYOUT.index_of(abs(v))
        if index is None:
            zero += 1
        else:
            side = pos if v > 0 else neg
            side[index] = side.get(index, 0) + 1
    return SeriesSnapshot(
        model=model,
        version=version,
        metric=metric,
        dimension=dimension,
        unit=unit,
        layout=LAYOUT,
        count=len(values),
        sum=float(sum(values)),
        min=min(values) if values else None,
        max=max(values) if values else None,
        last_wall_ns=last_wall_ns if values else None,
        zero=zero,
        pos=pos,
        neg=neg,
        rejected=rejected or {},
        dropped=dropped or {},
    )


def snapshot(items: Sequence[SeriesSnapshot], end_ns: int = T0, seq: int = 1) -> Snapshot:
    return Snapshot(
        sources=(SnapshotSource("rec-1", "boot-1", seq, seq),),
        start_mono_ns=0,
        end_mono_ns=60 * SECOND,
        start_wall_ns=end_ns - 60 * SECOND,
        end_wall_ns=end_ns,
        layout=LAYOUT,
        series=tuple(items),
    )


def metrics_by_name(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["MetricName"]: m for m in entry["ModelMetrics"]}


# -- the mapping ---------------------------------------------------------------------------


def test_each_aggregate_maps_to_one_metric() -> None:
    s = series(
        [1.0, 2.0, 3.0, 10.0],
        dimension="camera-front",
        last_wall_ns=T0 - 5 * SECOND,
        rejected={"nan": 2, "inf": 1},
        dropped={"ring_full": 4},
    )
    params = build_heartbeat([snapshot([s])], IDENTITY)

    assert params["AgentVersion"] == sanitize_agent_version(edgetelemetry.__version__)
    assert (params["DeviceName"], params["DeviceFleetName"]) == ("jetson-01", "line-3")
    [entry] = params["Models"]
    assert (entry["ModelName"], entry["ModelVersion"]) == ("resnet18", "1.0")
    assert entry["LatestInference"] == dt(T0 - 5 * SECOND)
    assert "LatestSampleTime" not in entry
    assert [m["MetricName"] for m in entry["ModelMetrics"]] == [
        f"latency-ms-{stat}" for stat in STAT_SUFFIXES
    ]
    for m in entry["ModelMetrics"]:
        assert m["Dimension"] == "camera-front"
        assert m["Timestamp"] == dt(T0)  # the window's end, not the record time
        assert m["Timestamp"].tzinfo is not None
    values = {name: m["Value"] for name, m in metrics_by_name(entry).items()}
    assert values["latency-ms-count"] == 4.0
    assert values["latency-ms-sum"] == 16.0
    assert values["latency-ms-min"] == 1.0
    assert values["latency-ms-max"] == 10.0
    assert values["latency-ms-mean"] == 4.0
    for q in ("p50", "p90", "p95", "p99"):
        assert values[f"latency-ms-{q}"] == s.quantile(int(q[1:]) / 100)
    assert values["latency-ms-rejected"] == 3.0
    assert values["latency-ms-dropped"] == 4.0
    assert "AgentMetrics" not in params and "DeploymentResult" not in params


def test_an_empty_series_reports_counts_but_no_distribution() -> None:
    empty = series([], metric="queue", unit=None, dropped={"ring_full": 7})
    [entry] = build_heartbeat([snapshot([empty])], IDENTITY)["Models"]
    assert {n: m["Value"] for n, m in metrics_by_name(entry).items()} == {
        "queue-count": 0.0,
        "queue-sum": 0.0,
        "queue-rejected": 0.0,
        "queue-dropped": 7.0,
    }
    assert entry["ModelMetrics"][0]["Dimension"] == "all"
    assert "LatestInference" not in entry


def test_models_are_one_entry_per_model_and_version_in_order() -> None:
    snap = snapshot(
        [
            series([1.0], model="yolo", version="2", last_wall_ns=T0 - 3),
            series([1.0], model="resnet18", version="1.1", last_wall_ns=T0 - 2),
            series([2.0], model="resnet18", version="1.0", last_wall_ns=T0 - 1),
            series([3.0], model="resnet18", version="1.0", metric="score", unit=None),
        ]
    )
    params = build_heartbeat([snap], IDENTITY)
    keys = [(m["ModelName"], m["ModelVersion"]) for m in params["Models"]]
    assert keys == [("resnet18", "1.0"), ("resnet18", "1.1"), ("yolo", "2")]
    assert len(params["Models"][0]["ModelMetrics"]) == 2 * len(STAT_SUFFIXES)


def test_a_backlog_keeps_each_window_as_its_own_point() -> None:
    older = snapshot([series([1.0], last_wall_ns=T0 - 90 * SECOND)], end_ns=T0 - 60 * SECOND)
    newer = snapshot([series([5.0, 7.0], last_wall_ns=T0 - SECOND)], end_ns=T0, seq=2)
    [entry] = build_heartbeat([older, newer], IDENTITY)["Models"]
    counts = [
        (m["Timestamp"], m["Value"])
        for m in entry["ModelMetrics"]
        if m["MetricName"] == "latency-ms-count"
    ]
    assert counts == [(dt(T0 - 60 * SECOND), 1.0), (dt(T0), 2.0)]
    assert entry["LatestInference"] == dt(T0 - SECOND)
    # Merging first reports one window instead.
    [merged] = build_heartbeat([older.merge(newer)], IDENTITY)["Models"]
    assert metrics_by_name(merged)["latency-ms-count"]["Value"] == 3.0


def test_model_state_supplies_sample_time_and_a_newer_inference() -> None:
    s = series([1.0], last_wall_ns=T0 - 10 * SECOND)
    key = ("resnet18", "1.0")
    newer = ModelState(latest_inference_ns=T0 - SECOND, latest_sample_ns=T0 - 20 * SECOND)
    [entry] = build_heartbeat([snapshot([s])], IDENTITY, model_state={key: newer})["Models"]
    assert entry["LatestInference"] == dt(T0 - SECOND)
    assert entry["LatestSampleTime"] == dt(T0 - 20 * SECOND)

    older = ModelState(latest_inference_ns=T0 - 100 * SECOND)
    [entry] = build_heartbeat([snapshot([s])], IDENTITY, model_state={key: older})["Models"]
    assert entry["LatestInference"] == dt(T0 - 10 * SECOND)
    assert "LatestSampleTime" not in entry


def test_a_model_known_only_from_state_is_still_listed() -> None:
    state = {("yolo", "2"): ModelState(latest_inference_ns=T0 - SECOND)}
    params = build_heartbeat([], IDENTITY, model_state=state)
    assert params["Models"] == [
        {
            "ModelName": "yolo",
            "ModelVersion": "2",
            "LatestInference": dt(T0 - SECOND),
            "ModelMetrics": [],
        }
    ]


def test_agent_metrics_are_sorted_and_stamped_with_the_latest_window_end() -> None:
    snaps = [snapshot([], end_ns=T0), snapshot([], end_ns=T0 - 60 * SECOND)]
    params = build_heartbeat(snaps, IDENTITY, agent_metrics={"spool-bytes": 42, "cpu-pct": 3.5})
    assert params["AgentMetrics"] == [
        {"MetricName": "cpu-pct", "Dimension": "all", "Value": 3.5, "Timestamp": dt(T0)},
        {"MetricName": "spool-bytes", "Dimension": "all", "Value": 42, "Timestamp": dt(T0)},
    ]
    # Without a window there is no time to give them: the builder never reads the clock.
    [metric] = build_heartbeat([], IDENTITY, agent_metrics={"cpu-pct": 1.0})["AgentMetrics"]
    assert "Timestamp" not in metric


@pytest.mark.parametrize(
    ("name", "value", "path", "rule"),
    [
        ("cpu_pct", 1.0, "AgentMetrics[0].MetricName", "pattern"),
        ("cpu", 1.0, "AgentMetrics[0].MetricName", "min_length"),
        ("cpu-pct", math.nan, "AgentMetrics[0].Value", "finite"),
        ("cpu-pct", "high", "AgentMetrics[0].Value", "type"),
    ],
)
def test_bad_agent_metrics_fail_with_path_and_rule(
    name: str, value: Any, path: str, rule: str
) -> None:
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat([], IDENTITY, agent_metrics={name: value})
    assert (info.value.path, info.value.rule) == (path, rule)


def test_agent_version_is_made_valid_by_default_and_sent_as_given_otherwise() -> None:
    assert sanitize_agent_version("0.1.0") == "0.1.0"
    assert sanitize_agent_version("1.0.0-rc1") == "1.0.0_rc1"
    assert sanitize_agent_version("1.0.0+local-7") == "1.0.0_local_7"
    assert len(sanitize_agent_version("1." * 50)) == 64
    assert build_heartbeat([], IDENTITY, agent_version="2.0 beta")["AgentVersion"] == "2.0 beta"
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat([], IDENTITY, agent_version="2.0-beta")
    assert (info.value.path, info.value.rule) == ("AgentVersion", "pattern")


@pytest.mark.parametrize(
    ("device", "fleet", "path", "rule"),
    [
        ("jetson.01", "line-3", "DeviceName", "pattern"),
        ("", "line-3", "DeviceName", "min_length"),
        ("jetson-01", "f" * 64, "DeviceFleetName", "max_length"),
    ],
)
def test_device_identity_is_checked_on_creation(
    device: str, fleet: str, path: str, rule: str
) -> None:
    with pytest.raises(HeartbeatValidationError) as info:
        DeviceIdentity(device, fleet)
    assert (info.value.path, info.value.rule) == (path, rule)
    DeviceIdentity("jetson_01", "line-3")  # underscores are allowed in device names


def test_deployment_result_is_passed_through_as_a_copy() -> None:
    result = {
        "DeploymentName": "rollout-7",
        "DeploymentStatus": "SUCCESS",
        "DeploymentStartTime": dt(T0 - 60 * SECOND),
        "DeploymentModels": [
            {"ModelHandle": "resnet", "ModelName": "resnet18", "ModelVersion": "1.0",
             "State": "DEPLOY", "Status": "SUCCESS"}
        ],
    }
    params = build_heartbeat([], IDENTITY, deployment_result=result)
    assert params["DeploymentResult"] == result
    result["DeploymentModels"][0]["Status"] = "FAIL"
    assert params["DeploymentResult"]["DeploymentModels"][0]["Status"] == "SUCCESS"

    result["DeploymentModels"][0]["Status"] = "FAILED"
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat([], IDENTITY, deployment_result=result)
    assert (info.value.path, info.value.rule) == (
        "DeploymentResult.DeploymentModels[0].Status", "enum"
    )


def test_options_choose_stats_and_default_dimension() -> None:
    options = PayloadOptions(default_dimension="device", stats=("p99", "count"))
    [entry] = build_heartbeat(
        [snapshot([series([1.0, 2.0])])], IDENTITY, options=options
    )["Models"]
    assert [(m["MetricName"], m["Dimension"]) for m in entry["ModelMetrics"]] == [
        ("latency-ms-p99", "device"),
        ("latency-ms-count", "device"),
    ]
    for bad in (("p999",), ("count", "count")):
        with pytest.raises(ValueError):
            PayloadOptions(stats=bad)
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat(
            [snapshot([series([1.0])])], IDENTITY, options=PayloadOptions(default_dimension="a_b")
        )
    assert (info.value.path, info.value.rule) == ("Models[0].ModelMetrics[0].Dimension", "pattern")


# -- failures name the field ---------------------------------------------------------------


def test_a_window_from_an_unset_clock_is_refused() -> None:
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat([snapshot([series([1.0], last_wall_ns=5)], end_ns=60 * SECOND)], IDENTITY)
    assert info.value.rule == "min_timestamp"
    assert info.value.path == "Models[0].LatestInference"
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat([snapshot([series([])], end_ns=60 * SECOND)], IDENTITY)
    assert (info.value.path, info.value.rule) == (
        "Models[0].ModelMetrics[0].Timestamp", "min_timestamp"
    )


def test_times_outside_the_datetime_range_are_refused() -> None:
    state = {("resnet18", "1.0"): ModelState(latest_sample_ns=10**30)}
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat([], IDENTITY, model_state=state)
    assert (info.value.path, info.value.rule, info.value.value) == (
        "Models[0].LatestSampleTime", "max_timestamp", 10**30
    )


@pytest.mark.parametrize(
    ("changes", "path", "rule"),
    [
        # names a foreign or hand-made snapshot may carry: decoding does not check them
        ({"metric": "latency_ms", "unit": None}, "Models[0].ModelMetrics[0].MetricName", "pattern"),
        ({"metric": "x" * 120}, "Models[0].ModelMetrics[0].MetricName", "max_length"),
        ({"metric": "latency", "unit": "m_s"}, "Models[0].ModelMetrics[0].MetricName", "pattern"),
        ({"model": "res_net"}, "Models[0].ModelName", "pattern"),
        ({"version": "1.0-rc1"}, "Models[0].ModelVersion", "pattern"),
        ({"dimension": "cam front"}, "Models[0].ModelMetrics[0].Dimension", "pattern"),
    ],
)
def test_bad_series_names_fail_with_path_and_rule(
    changes: dict[str, Any], path: str, rule: str
) -> None:
    fields = {"model": "resnet18", "version": "1.0", "metric": "latency", "unit": "ms", **changes}
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat([snapshot([series([1.0], **fields)])], IDENTITY)
    assert (info.value.path, info.value.rule) == (path, rule)


def test_a_sum_that_overflowed_fails_as_not_finite() -> None:
    big = series([1e308, 1e308])
    assert math.isinf(big.sum)
    with pytest.raises(HeartbeatValidationError) as info:
        build_heartbeat([snapshot([big])], IDENTITY)
    assert (info.value.path, info.value.rule) == ("Models[0].ModelMetrics[1].Value", "finite")


# -- purity and the wire -------------------------------------------------------------------


def test_the_builder_is_pure() -> None:
    snaps = [snapshot([series([1.0, 2.0], last_wall_ns=T0 - 1, dimension="a/b")])]
    state = {("resnet18", "1.0"): ModelState(T0 - 2, T0 - 3)}
    agent = {"cpu-pct": 2.0}
    before = copy.deepcopy((snaps, state, agent))
    first = build_heartbeat(snaps, IDENTITY, agent_metrics=agent, model_state=state)
    second = build_heartbeat(snaps, IDENTITY, agent_metrics=agent, model_state=state)
    assert first == second
    assert (snaps, state, agent) == before


def _wire_checked(params: dict[str, Any]) -> None:
    """What boto3 would do with ``params``: its validator, its serializer, strict JSON."""
    op = _MODEL.operation_model("SendHeartbeat")
    assert not ParamValidator().validate(params, op.input_shape).has_errors()
    body = create_serializer("rest-json").serialize_to_request(params, op)["body"]

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the body")

    decoded = json.loads(body, parse_constant=refuse)
    validate_send_heartbeat(decoded)


# -- property: arbitrary snapshots always give a valid payload, or the documented error -----


def _names(rule: Any) -> st.SearchStrategy[str]:
    return st.from_regex(rule.pattern, fullmatch=True).filter(lambda s: rule.problem(s) is None)


@st.composite
def valid_series(draw: st.DrawFn, end_ns: int) -> SeriesSnapshot:
    unit = draw(st.none() | _names(UNIT_RULE))
    metric = draw(
        st.from_regex(METRIC_RULE.pattern, fullmatch=True).filter(lambda m: _passes(m, unit))
    )
    values = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20))
    return series(
        values,
        model=draw(st.sampled_from(["resnet18", "yolo-v8", "a1b2"]) | _names(MODEL_RULE)),
        version=draw(st.sampled_from(["1.0", "2"]) | _names(VERSION_RULE)),
        metric=metric,
        unit=unit,
        dimension=draw(st.none() | _names(DIMENSION_RULE)),
        last_wall_ns=draw(st.integers(end_ns - 60 * SECOND, end_ns)),
        rejected=draw(st.dictionaries(st.sampled_from(["nan", "inf"]), st.integers(0, 10**6))),
        dropped=draw(st.dictionaries(st.sampled_from(["ring_full"]), st.integers(0, 10**6))),
    )


def _passes(metric: str, unit: str | None) -> bool:
    try:
        check_series_names("abcd", "1", metric, None, unit)
    except ValueError:
        return False
    return True


END_NS = st.integers(
    int(datetime(2020, 1, 2, tzinfo=UTC).timestamp()) * SECOND,
    int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()) * SECOND,
)


@st.composite
def valid_snapshots(draw: st.DrawFn) -> list[Snapshot]:
    out = []
    for seq in range(draw(st.integers(0, 3))):
        end_ns = draw(END_NS)
        items = draw(st.lists(valid_series(end_ns), max_size=4))
        # one series per key in a window, as a recorder reports it
        unique = {s.key: s for s in items}
        out.append(snapshot(list(unique.values()), end_ns=end_ns, seq=seq + 1))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_snapshots())
def test_snapshots_with_valid_names_give_a_valid_payload(snaps: list[Snapshot]) -> None:
    try:
        params = build_heartbeat(snaps, IDENTITY, agent_metrics={"cpu-pct": 1.0})
    except HeartbeatValidationError as error:
        # The only way out: a sum of finite values that overflowed the double range.
        assert error.rule == "finite"
        assert re.fullmatch(r"Models\[\d+\]\.ModelMetrics\[\d+\]\.Value", error.path)
        assert any(math.isinf(s.sum) for snap in snaps for s in snap.series)
        return
    _wire_checked(params)
    total = 0
    for snap in snaps:
        for s in snap.series:
            total += len(STAT_SUFFIXES) if s.count else len(EMPTY_STATS)
            for stat in STAT_SUFFIXES if s.count else EMPTY_STATS:
                name = heartbeat_metric_name(s.metric, s.unit, stat)
                entry = next(
                    m for m in params["Models"] if (m["ModelName"], m["ModelVersion"]) == s.key[:2]
                )
                assert any(
                    m["MetricName"] == name
                    and m["Dimension"] == (s.dimension or "all")
                    and m["Timestamp"] == dt(snap.end_wall_ns)
                    for m in entry["ModelMetrics"]
                )
    assert sum(len(m["ModelMetrics"]) for m in params["Models"]) == total
    # A decoded snapshot gives the same payload.
    decoded = [Snapshot.from_msgpack(s.to_msgpack()) for s in snaps]
    assert build_heartbeat(decoded, IDENTITY, agent_metrics={"cpu-pct": 1.0}) == params


DOCUMENTED_PATH = re.compile(
    r"Models\[\d+\]\.(ModelName|ModelVersion|ModelMetrics\[\d+\]\.(MetricName|Dimension|Value))"
)


@settings(max_examples=150, deadline=None)
@given(
    model=st.text(max_size=70),
    version=st.text(max_size=70),
    metric=st.text(max_size=110),
    unit=st.none() | st.text(max_size=5),
    dimension=st.none() | st.text(max_size=5),
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=5),
)
def test_snapshots_with_any_names_validate_or_fail_as_documented(
    model: str, version: str, metric: str, unit: str | None, dimension: str | None,
    values: list[float],
) -> None:
    s = series(values, model=model, version=version, metric=metric, unit=unit,
               dimension=dimension, last_wall_ns=T0)
    try:
        params = build_heartbeat([snapshot([s])], IDENTITY)
    except HeartbeatValidationError as error:
        assert DOCUMENTED_PATH.fullmatch(error.path), error.path
        assert error.rule in {"pattern", "min_length", "max_length", "finite"}
        assert error.path in str(error) and repr(error.rule) in str(error)
        return
    _wire_checked(params)


# -- windows list only series with activity; names never clash (issue 11) -------------------


def test_a_model_idle_in_the_window_keeps_its_entry_without_metrics() -> None:
    # the recorder lists only series with activity: a model known from the agent's state
    # but idle in this window is reported with its LatestInference and no ModelMetrics
    busy = series([1.0], model="resnet18")
    state = {("yolo-v8", "2"): ModelState(latest_inference_ns=T0 - 3600 * SECOND)}
    params = build_heartbeat([snapshot([busy])], IDENTITY, model_state=state)
    resnet, yolo = params["Models"]
    assert resnet["ModelName"] == "resnet18" and len(resnet["ModelMetrics"]) == 11
    assert yolo == {"ModelName": "yolo-v8", "ModelVersion": "2",
                    "LatestInference": dt(T0 - 3600 * SECOND), "ModelMetrics": []}


def test_with_a_real_recorder_an_idle_series_sends_nothing() -> None:
    with edgetelemetry.Recorder(collector_period=None) as rec:
        lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        rec.histogram("confidence", model="resnet18", version="1.0")
        lat.record(2.0)
        params = build_heartbeat([rec.snapshot()], IDENTITY)
        [entry] = params["Models"]
        assert {m["MetricName"].rsplit("-", 1)[0] for m in entry["ModelMetrics"]} == {
            "latency-ms"}
        assert build_heartbeat([rec.snapshot()], IDENTITY)["Models"] == []


@pytest.mark.parametrize("order", [1, -1])
def test_clashing_names_keep_one_series_and_report_the_rest(order: int) -> None:
    # snapshots no registry checked (hand-made, merged from two recorders): "latency" in ms
    # and "latency-ms" without a unit would both be latency-ms-*; "all" is the default
    # dimension's name, so an explicit "all" clashes with no dimension
    first = series([1.0, 2.0], metric="latency", unit="ms")
    second = series([50.0], metric="latency-ms", unit=None)
    third = series([7.0], metric="queue", unit=None, dimension="all")
    fourth = series([8.0], metric="queue", unit=None)
    other_model = series([3.0], metric="latency-ms", unit=None, version="2.0")
    items = [first, second, third, fourth, other_model][::order]
    params = build_heartbeat([snapshot(items)], IDENTITY, agent_metrics={"cpu-pct": 1.0})
    v1, v2 = params["Models"]
    names = [(m["MetricName"], m["Dimension"]) for m in v1["ModelMetrics"]]
    assert len(names) == len(set(names)) == 22, "one entry per name and dimension"
    kept = {n: m["Value"] for n, m in metrics_by_name(v1).items() if n.endswith("-count")}
    assert kept == {"latency-ms-count": 2.0, "queue-count": 1.0}
    assert metrics_by_name(v1)["queue-max"]["Value"] == 8.0  # no dimension sorts first
    assert len(v2["ModelMetrics"]) == 11, "another version is another model entry"
    agent = {m["MetricName"]: m["Value"] for m in params["AgentMetrics"]}
    assert agent == {"cpu-pct": 1.0, "series-name-clashes": 2.0}
    # the same choice whatever the order of snapshots: a backlog of two windows
    backlog = build_heartbeat([snapshot([first], seq=1), snapshot([second], T0 + SECOND, 2)],
                              IDENTITY)
    assert {m["Value"] for m in backlog["Models"][0]["ModelMetrics"]
            if m["MetricName"] == "latency-ms-count"} == {2.0}
    assert {m["MetricName"]: m["Value"] for m in backlog["AgentMetrics"]} == {
        "series-name-clashes": 1.0}
