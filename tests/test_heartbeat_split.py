"""Splitting a heartbeat: nothing lost, nothing duplicated, every limit kept, sizes exact."""

from __future__ import annotations

import copy
import string
from datetime import datetime, timezone
from typing import Any

import botocore.session
import pytest
from botocore.serialize import create_serializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetelemetry.heartbeat import (
    DeviceIdentity,
    HeartbeatTooLargeError,
    HeartbeatValidationError,
    SplitLimits,
    build_heartbeat,
    request_bytes,
    split_heartbeat,
    validate_send_heartbeat,
)

UTC = timezone.utc
_OP = botocore.session.get_session().get_service_model("sagemaker-edge").operation_model(
    "SendHeartbeat"
)
HEADER = {"AgentVersion": "0.1.0", "DeviceName": "jetson-01", "DeviceFleetName": "line-3"}
BODY_KEYS = {"Models", "AgentMetrics", "DeploymentResult"}


def botocore_bytes(params: dict[str, Any]) -> int:
    """The body botocore's own rest-json serializer produces: the oracle for sizes."""
    return len(create_serializer("rest-json").serialize_to_request(params, _OP)["body"])


def metric(name: str = "latency-ms-p99", value: float = 1.5, **extra: Any) -> dict[str, Any]:
    return {
        "MetricName": name,
        "Dimension": "all",
        "Value": value,
        "Timestamp": datetime(2024, 5, 1, tzinfo=UTC),
        **extra,
    }


def model(name: str, metrics: list[dict[str, Any]] | None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ModelName": name,
        "ModelVersion": "1.0",
        "LatestInference": datetime(2024, 5, 1, 0, 0, 1, 500000, tzinfo=UTC),
        **extra,
    }
    if metrics is not None:
        entry["ModelMetrics"] = metrics
    return entry


def flatten(requests: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """(agent metrics, (model header, metric) pairs) in order across ``requests``."""
    agent: list[Any] = []
    pairs: list[Any] = []
    for req in requests:
        agent.extend(req.get("AgentMetrics", []))
        for entry in req.get("Models", []):
            head = {k: v for k, v in entry.items() if k != "ModelMetrics"}
            metrics = entry.get("ModelMetrics")
            if not metrics:
                pairs.append((head, "no metrics" if metrics is None else "empty"))
            pairs.extend((head, m) for m in metrics or ())
    return agent, pairs


def check_split(params: dict[str, Any], limits: SplitLimits, out: list[dict[str, Any]]) -> None:
    assert out, "at least one request"
    assert flatten(out) == flatten([params])
    header = {k: v for k, v in params.items() if k not in BODY_KEYS}
    for i, req in enumerate(out):
        assert {k: v for k, v in req.items() if k not in BODY_KEYS} == header
        size = request_bytes(req)
        assert size == botocore_bytes(req)
        assert size <= limits.max_bytes
        assert len(req.get("Models", [])) <= limits.max_models
        assert len(req.get("AgentMetrics", [])) <= limits.max_agent_metrics
        for entry in req.get("Models", []):
            assert len(entry.get("ModelMetrics", [])) <= limits.max_model_metrics
        if i:
            assert "DeploymentResult" not in req
            assert req.get("Models") or req.get("AgentMetrics"), "a request with nothing in it"
        validate_send_heartbeat(req)
    if "DeploymentResult" in params:
        assert out[0]["DeploymentResult"] == params["DeploymentResult"]
    # Agent metrics fill requests from the first one on (the second if the deployment result
    # left no room), without gaps.
    holding = [i for i, req in enumerate(out) if req.get("AgentMetrics")]
    if holding:
        assert holding == list(range(holding[0], holding[-1] + 1))
        assert holding[0] == 0 or (holding[0] == 1 and "DeploymentResult" in params)


# -- arbitrary valid payloads --------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
TIMESTAMPS = st.one_of(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(1_577_836_800, 4_102_444_800),
    st.floats(1_577_836_800, 4_102_444_800),
)


@st.composite
def metrics(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "MetricName": draw(st.text(_ALNUM, min_size=4, max_size=40)),
        "Value": draw(
            st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6)
        ),
    }
    if draw(st.booleans()):
        out["Dimension"] = draw(st.text(_ALNUM + "/", min_size=1, max_size=20).filter(
            lambda d: d[0] != "/"
        ))
    if draw(st.booleans()):
        out["Timestamp"] = draw(TIMESTAMPS)
    return out


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ModelName": draw(st.text(_ALNUM, min_size=4, max_size=30)),
        "ModelVersion": draw(st.text(_ALNUM + " _.", min_size=1, max_size=10)),
    }
    for key in ("LatestSampleTime", "LatestInference"):
        if draw(st.booleans()):
            out[key] = draw(TIMESTAMPS)
    choice = draw(st.integers(0, 4))
    if choice:  # mostly with metrics; sometimes an empty list or no key at all
        out["ModelMetrics"] = draw(st.lists(metrics(), max_size=0 if choice == 1 else 25))
    return out


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = dict(HEADER)
    if draw(st.booleans()):
        out["Models"] = draw(st.lists(models(), max_size=6))
    if draw(st.booleans()):
        out["AgentMetrics"] = draw(st.lists(metrics(), max_size=8))
    if draw(st.booleans()):
        out["DeploymentResult"] = {
            "DeploymentName": "rollout-7",
            "DeploymentStatus": "SUCCESS",
            # non-ASCII text is sent escaped: six bytes a character, not one or two
            "DeploymentStatusMessage": draw(st.text(max_size=30)),
            "DeploymentEndTime": draw(TIMESTAMPS),
        }
    validate_send_heartbeat(out)
    return out


LIMITS = st.builds(
    SplitLimits,
    max_models=st.integers(1, 5),
    max_model_metrics=st.integers(1, 12),
    max_agent_metrics=st.integers(1, 5),
    max_bytes=st.integers(150, 6000),
)


def _alone(params: dict[str, Any], path: str) -> dict[str, Any]:
    """The request a piece would take alone, built here independently of the splitter."""
    req: dict[str, Any] = {k: v for k, v in params.items() if k not in BODY_KEYS}
    if "Models" in params:
        req["Models"] = []
    if path == "DeploymentResult":
        req["DeploymentResult"] = params["DeploymentResult"]
        if "AgentMetrics" in params:
            req["AgentMetrics"] = []
        return req
    if path.startswith("AgentMetrics["):
        req["AgentMetrics"] = [params["AgentMetrics"][int(path[13:-1])]]
        return req
    i = int(path[len("Models["):path.index("]")])
    entry = {k: v for k, v in params["Models"][i].items() if k != "ModelMetrics"}
    if ".ModelMetrics[" in path:
        j = int(path[path.rindex("[") + 1:-1])
        entry["ModelMetrics"] = [params["Models"][i]["ModelMetrics"][j]]
    elif "ModelMetrics" in params["Models"][i]:
        entry["ModelMetrics"] = []
    req["Models"].append(entry)
    return req


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=payloads(), limits=LIMITS)
def test_split_keeps_every_metric_once_and_every_limit(
    params: dict[str, Any], limits: SplitLimits
) -> None:
    before = copy.deepcopy(params)
    try:
        out = split_heartbeat(params, limits)
    except HeartbeatTooLargeError as error:
        # Honest only if that piece really cannot fit alone.
        assert error.limit == limits.max_bytes
        assert error.size == botocore_bytes(_alone(params, error.path)) > limits.max_bytes
        assert (error.rule, isinstance(error, HeartbeatValidationError)) == ("max_bytes", True)
        return
    finally:
        assert params == before, "the input was changed"
    check_split(params, limits, out)
    assert split_heartbeat(params, limits) == out


# -- cases ---------------------------------------------------------------------------------


def test_default_limits_are_the_documented_ones() -> None:
    assert SplitLimits() == SplitLimits(
        max_models=50, max_model_metrics=500, max_agent_metrics=100, max_bytes=256 * 1024
    )
    for name in ("max_models", "max_model_metrics", "max_agent_metrics", "max_bytes"):
        with pytest.raises(ValueError, match=name):
            SplitLimits(**{name: 0})


def test_a_payload_within_the_limits_is_sent_as_it_is() -> None:
    params = {
        **HEADER,
        "Models": [model("resnet18", [metric()])],
        "AgentMetrics": [metric("cpu-pct")],
    }
    assert split_heartbeat(params) == [params]
    assert split_heartbeat(dict(HEADER)) == [HEADER]


def test_a_model_cut_over_requests_repeats_its_header() -> None:
    params = {
        **HEADER,
        "Models": [
            model("resnet18", [metric(value=v) for v in range(5)], LatestSampleTime=2.1e9)
        ],
        "AgentMetrics": [metric("cpu-pct"), metric("mem-pct")],
        "DeploymentResult": {"DeploymentName": "rollout-7", "DeploymentStatus": "SUCCESS"},
    }
    limits = SplitLimits(max_model_metrics=2, max_agent_metrics=1)
    out = split_heartbeat(params, limits)
    # Greedy and in order: agent metrics that spill open the second request, and the models
    # start where the agent metrics end.
    assert [len(r.get("AgentMetrics", [])) for r in out] == [1, 1, 0, 0]
    assert [[len(m["ModelMetrics"]) for m in r["Models"]] for r in out] == [[], [2], [2], [1]]
    assert ["DeploymentResult" in r for r in out] == [True, False, False, False]
    head = {k: v for k, v in params["Models"][0].items() if k != "ModelMetrics"}
    for req in out[1:]:
        assert {k: v for k, v in req["Models"][0].items() if k != "ModelMetrics"} == head
    check_split(params, limits, out)


def test_models_per_request_are_limited() -> None:
    params = {**HEADER, "Models": [model(f"model{i}", [metric()]) for i in range(5)]}
    out = split_heartbeat(params, SplitLimits(max_models=2))
    assert [[m["ModelName"] for m in r["Models"]] for r in out] == [
        ["model0", "model1"], ["model2", "model3"], ["model4"]
    ]


def test_bytes_are_measured_as_botocore_sends_them() -> None:
    snap_free = build_heartbeat(
        [],
        DeviceIdentity("jetson-01", "line-3"),
        agent_metrics={"cpu-pct": 0.1 + 0.2},
        deployment_result={
            "DeploymentName": "rollout-7",
            "DeploymentStatusMessage": "déjà vu ✓",
            "DeploymentStartTime": 1_714_564_800.999,
        },
    )
    assert request_bytes(snap_free) == botocore_bytes(snap_free)


def test_byte_limit_cuts_between_metrics() -> None:
    params = {**HEADER, "Models": [model("resnet18", [metric(value=v) for v in range(40)])]}
    limit = botocore_bytes(params) // 3
    out = split_heartbeat(params, SplitLimits(max_bytes=limit))
    assert len(out) >= 3
    check_split(params, SplitLimits(max_bytes=limit), out)


def test_a_metric_too_big_for_any_request_is_a_clear_error() -> None:
    params = {**HEADER, "Models": [model("resnet18", [metric(), metric("x" * 100)])]}
    limit = botocore_bytes(_alone(params, "Models[0].ModelMetrics[0]"))
    with pytest.raises(HeartbeatTooLargeError) as info:
        split_heartbeat(params, SplitLimits(max_bytes=limit))
    assert info.value.path == "Models[0].ModelMetrics[1]"
    assert info.value.size == limit + 86 > info.value.limit == limit
    assert "Models[0].ModelMetrics[1]" in str(info.value) and str(limit) in str(info.value)
