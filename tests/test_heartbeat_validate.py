"""The validator against botocore's own sagemaker-edge model.

Most cases are generated from the model: for every constrained member of every operation's
input, values on both sides of each rule are derived from the model's own min/max/pattern/enum,
so a botocore update that changes a rule changes what these tests expect, and a validator that
drifts from the model fails.  The hand-written cases at the end come from the contract.
"""

from __future__ import annotations

import json
import math
import re
import string
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import botocore.session
import pytest
from botocore.model import ShapeResolver
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetelemetry.errors import EdgeTelemetryError
from edgetelemetry.heartbeat.validate import (
    HeartbeatValidationError,
    validate_input,
    validate_send_heartbeat,
    validate_shape,
)

MODEL = botocore.session.get_session().get_service_model("sagemaker-edge")
OPERATIONS = list(MODEL.operation_names)
UTC = timezone.utc

Path = tuple[Any, ...]  # member names and list indexes


def _walk(shape: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every member reachable from ``shape`` (lists through their first item)."""
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            yield path + (name,), member
            yield from _walk(member, path + (name,))
    elif shape.type_name == "list":
        yield path + (0,), shape.member
        yield from _walk(shape.member, path + (0,))


def _text(path: Path) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def _valid_string(shape: Any) -> str:
    if shape.enum:
        return shape.enum[0]
    meta = shape.metadata
    for candidate in ("abcd", "a", "abcd1234"):
        if meta.get("min", 0) <= len(candidate) <= meta.get("max", 1 << 30) and re.fullmatch(
            meta.get("pattern", ".*"), candidate
        ):
            return candidate
    raise AssertionError(f"no example for {shape.name} {meta}: extend the candidates")


def _example(shape: Any) -> Any:
    """A valid value for ``shape`` with every optional member present."""
    kind = shape.type_name
    if kind == "structure":
        return {name: _example(member) for name, member in shape.members.items()}
    if kind == "list":
        return [_example(shape.member)]
    if kind == "string":
        return _valid_string(shape)
    if kind == "double":
        return 1.5
    if kind == "timestamp":
        return datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    raise AssertionError(f"the model gained a {kind} shape: teach these tests about it")


def _with(params: Any, path: Path, value: Any) -> Any:
    """A copy of ``params`` with ``value`` at ``path`` (``_DELETE`` removes the member)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(params, list):
        copy = list(params)
        copy[head] = _with(copy[head], rest, value)
        return copy
    copy = dict(params)
    if not rest:
        if value is _DELETE:
            del copy[head]
        else:
            copy[head] = value
    else:
        copy[head] = _with(copy[head], rest, value)
    return copy


_DELETE = object()


def _members(kind: str | None = None) -> list[tuple[str, Path, Any]]:
    return [
        (op, path, shape)
        for op in OPERATIONS
        for path, shape in _walk(MODEL.operation_model(op).input_shape)
        if kind is None or shape.type_name == kind
    ]


CONSTRAINED_STRINGS = [
    (op, path, shape)
    for op, path, shape in _members("string")
    if not shape.enum and {"min", "max", "pattern"} & set(shape.metadata)
]
ENUMS = [(op, path, shape) for op, path, shape in _members("string") if shape.enum]
STRUCTURES = [(op, (), MODEL.operation_model(op).input_shape) for op in OPERATIONS] + _members(
    "structure"
)


def _ids(cases: list[tuple[str, Path, Any]]) -> list[str]:
    return [f"{op}:{_text(path) or '<input>'}" for op, path, _ in cases]


STRING_IDS = _ids(CONSTRAINED_STRINGS)


def _expect(op: str, params: Any, path: Path | str, rule: str) -> HeartbeatValidationError:
    with pytest.raises(HeartbeatValidationError) as info:
        validate_input(op, params)
    where = path if isinstance(path, str) else _text(path)
    assert (info.value.path, info.value.rule) == (where, rule), str(info.value)
    return info.value


def _pumped(shape: Any, length: int) -> str:
    """A string of ``length`` that matches the member's pattern: one allowed character
    repeated, so only the length rule can fail."""
    pattern = shape.metadata.get("pattern", ".*")
    for char in string.ascii_letters + string.digits:
        value = char * length
        if re.fullmatch(pattern, value):
            return value
    raise AssertionError(f"no repeatable character for {pattern}")


def test_model_has_the_members_the_contract_names() -> None:
    # Guards the generated cases against walking an empty model.
    paths = {_text(p) for _, p, _ in CONSTRAINED_STRINGS}
    assert {
        "AgentVersion",
        "DeviceName",
        "DeviceFleetName",
        "Models[0].ModelName",
        "Models[0].ModelVersion",
        "Models[0].ModelMetrics[0].MetricName",
        "Models[0].ModelMetrics[0].Dimension",
        "AgentMetrics[0].MetricName",
        "DeploymentResult.DeploymentModels[0].ModelHandle",
    } <= paths
    assert {op for op, _, _ in CONSTRAINED_STRINGS} == set(OPERATIONS)


@pytest.mark.parametrize("op", OPERATIONS)
def test_full_example_passes_ours_and_botocores_validator(op: str) -> None:
    shape = MODEL.operation_model(op).input_shape
    params = _example(shape)
    validate_input(op, params)
    assert not ParamValidator().validate(params, shape).has_errors()


@pytest.mark.parametrize(("op", "path", "shape"), CONSTRAINED_STRINGS, ids=STRING_IDS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_string_members_accept_what_the_model_allows(
    op: str, path: Path, shape: Any, data: st.DataObject
) -> None:
    meta = shape.metadata
    lo, hi = meta.get("min", 0), meta.get("max", 1 << 30)
    value = data.draw(
        st.from_regex(meta.get("pattern", r"(?s).*"), fullmatch=True).filter(
            lambda v: lo <= len(v) <= hi
        )
    )
    base = _example(MODEL.operation_model(op).input_shape)
    validate_input(op, _with(base, path, value))


@pytest.mark.parametrize(("op", "path", "shape"), CONSTRAINED_STRINGS, ids=STRING_IDS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_string_members_refuse_what_the_pattern_refuses(
    op: str, path: Path, shape: Any, data: st.DataObject
) -> None:
    meta = shape.metadata
    if "pattern" not in meta:
        return
    lo, hi = max(meta.get("min", 0), 1), min(meta.get("max", 40), 40)
    value = data.draw(
        st.text(st.characters(codec="ascii"), min_size=lo, max_size=hi).filter(
            lambda v: re.fullmatch(meta["pattern"], v) is None
        )
    )
    base = _example(MODEL.operation_model(op).input_shape)
    error = _expect(op, _with(base, path, value), path, "pattern")
    assert error.value == value


@pytest.mark.parametrize(("op", "path", "shape"), CONSTRAINED_STRINGS, ids=STRING_IDS)
def test_string_members_length_bounds_are_exact(op: str, path: Path, shape: Any) -> None:
    meta = shape.metadata
    base = _example(MODEL.operation_model(op).input_shape)
    if "max" in meta:
        validate_input(op, _with(base, path, _pumped(shape, meta["max"])))
        _expect(op, _with(base, path, _pumped(shape, meta["max"] + 1)), path, "max_length")
    if "min" in meta:
        validate_input(op, _with(base, path, _pumped(shape, meta["min"])))
        if meta["min"] > 0:
            short = _pumped(shape, meta["min"] - 1) if meta["min"] > 1 else ""
            _expect(op, _with(base, path, short), path, "min_length")


@pytest.mark.parametrize(("op", "path", "shape"), ENUMS, ids=_ids(ENUMS))
def test_enum_members_accept_exactly_the_enum(op: str, path: Path, shape: Any) -> None:
    base = _example(MODEL.operation_model(op).input_shape)
    for value in shape.enum:
        validate_input(op, _with(base, path, value))
        _expect(op, _with(base, path, value.lower()), path, "enum")
    _expect(op, _with(base, path, "MAYBE"), path, "enum")


@pytest.mark.parametrize(("op", "path", "shape"), STRUCTURES, ids=_ids(STRUCTURES))
def test_structures_check_required_and_unknown_members(op: str, path: Path, shape: Any) -> None:
    base = _example(MODEL.operation_model(op).input_shape)
    for name in shape.required_members:
        _expect(op, _with(base, path + (name,), _DELETE), path + (name,), "required")
    _expect(op, _with(base, path + ("Bogus",), 1), path + ("Bogus",), "unknown_member")
    _expect(op, _with(base, path, ["not", "a", "mapping"]), path, "type")


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_member_checks_its_type(op: str) -> None:
    base = _example(MODEL.operation_model(op).input_shape)
    for path, shape in _walk(MODEL.operation_model(op).input_shape):
        wrong: Any = 7 if shape.type_name in ("string", "structure", "list") else "7"
        _expect(op, _with(base, path, wrong), path, "type")
        _expect(op, _with(base, path, None), path, "type")


DOUBLES = _members("double")
TIMESTAMPS = _members("timestamp")


@pytest.mark.parametrize(("op", "path", "shape"), DOUBLES, ids=_ids(DOUBLES))
def test_doubles_must_be_finite(op: str, path: Path, shape: Any) -> None:
    base = _example(MODEL.operation_model(op).input_shape)
    for good in (0, -3, 2.5, 1e308, 10**300):
        validate_input(op, _with(base, path, good))
    for bad in (math.nan, math.inf, -math.inf, 10**400):
        _expect(op, _with(base, path, bad), path, "finite")
    _expect(op, _with(base, path, True), path, "type")


@pytest.mark.parametrize(("op", "path", "shape"), TIMESTAMPS, ids=_ids(TIMESTAMPS))
def test_timestamps_are_datetimes_or_epoch_numbers_after_2020(
    op: str, path: Path, shape: Any
) -> None:
    base = _example(MODEL.operation_model(op).input_shape)
    for good in (
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1),  # naive: botocore reads it as UTC
        1_700_000_000,
        1_700_000_000.25,
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp(),
    ):
        validate_input(op, _with(base, path, good))
    for early in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2019, 12, 31, 23, 59, 59, tzinfo=UTC),
        0,
        1_577_836_799.5,
        -1,
    ):
        _expect(op, _with(base, path, early), path, "min_timestamp")
    _expect(op, _with(base, path, 1e300), path, "max_timestamp")
    for bad in (math.nan, math.inf):
        _expect(op, _with(base, path, bad), path, "finite")
    for wrong in ("2024-01-01T00:00:00Z", True):
        _expect(op, _with(base, path, wrong), path, "type")


# -- hand-written cases from the contract --------------------------------------------------


def _heartbeat(**metric: Any) -> dict[str, Any]:
    entry = {
        "MetricName": "latency-ms-p99",
        "Dimension": "camera-front",
        "Value": 12.5,
        "Timestamp": datetime(2024, 5, 1, tzinfo=UTC),
        **metric,
    }
    return {
        "AgentVersion": "0.1.0",
        "DeviceName": "jetson_01",
        "DeviceFleetName": "line-3",
        "Models": [
            {
                "ModelName": "resnet18",
                "ModelVersion": "1.0",
                "LatestInference": datetime(2024, 5, 1, tzinfo=UTC),
                "ModelMetrics": [dict(entry), entry],
            }
        ],
    }


def test_a_realistic_heartbeat_passes() -> None:
    validate_send_heartbeat(_heartbeat())
    validate_send_heartbeat(_heartbeat(Dimension="camera/front", MetricName="a--b"))


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("MetricName", "p99", "min_length"),
        ("MetricName", "latency_ms", "pattern"),
        ("MetricName", "latency-", "pattern"),
        ("MetricName", "x" * 101, "max_length"),
        ("Dimension", "camera_front", "pattern"),
        ("Dimension", "", "min_length"),
        ("Value", math.nan, "finite"),
        ("Value", math.inf, "finite"),
        ("Timestamp", datetime(1970, 1, 1, tzinfo=UTC), "min_timestamp"),
        ("Timestamp", 0, "min_timestamp"),
    ],
)
def test_contract_metric_cases(field: str, value: Any, rule: str) -> None:
    params = _heartbeat()
    metrics = params["Models"][0]["ModelMetrics"]
    metrics[1] = {**metrics[1], field: value}
    error = _expect("SendHeartbeat", params, f"Models[0].ModelMetrics[1].{field}", rule)
    assert f"Models[0].ModelMetrics[1].{field}" in str(error)
    assert repr(rule) in str(error)
    assert (error.value is value) or error.value == value


@pytest.mark.parametrize(
    ("path", "value", "rule"),
    [
        ("AgentVersion", "1.0.0-rc1", "pattern"),
        ("AgentVersion", "1" * 65, "max_length"),
        ("DeviceName", "-dev", "pattern"),
        ("DeviceName", "d" * 64, "max_length"),
        ("DeviceFleetName", "line.3", "pattern"),
    ],
)
def test_contract_top_level_cases(path: str, value: str, rule: str) -> None:
    error = _expect("SendHeartbeat", {**_heartbeat(), path: value}, path, rule)
    assert repr(value) in str(error)


@pytest.mark.parametrize(
    ("value", "rule"),
    [("res_net", "pattern"), ("resnet.v2", "pattern"), ("abc", "min_length")],
)
def test_contract_model_name_cases(value: str, rule: str) -> None:
    params = _heartbeat()
    params["Models"][0]["ModelName"] = value
    _expect("SendHeartbeat", params, "Models[0].ModelName", rule)


def test_model_version_allows_space_underscore_dot_but_not_hyphen() -> None:
    params = _heartbeat()
    params["Models"][0]["ModelVersion"] = "1.0 beta_2"
    validate_send_heartbeat(params)
    params["Models"][0]["ModelVersion"] = "1.0-beta"
    _expect("SendHeartbeat", params, "Models[0].ModelVersion", "pattern")


def test_error_is_a_value_error_of_the_package() -> None:
    with pytest.raises(HeartbeatValidationError) as info:
        validate_send_heartbeat({"DeviceName": "d", "DeviceFleetName": "f"})
    assert isinstance(info.value, EdgeTelemetryError)
    assert isinstance(info.value, ValueError)
    error = info.value
    assert (error.path, error.rule, error.value) == ("AgentVersion", "required", None)


def test_other_operations_validate_too() -> None:
    validate_input("GetDeployments", {"DeviceName": "dev-1", "DeviceFleetName": "fleet"})
    _expect("GetDeviceRegistration", {"DeviceName": "dev-1"}, "DeviceFleetName", "required")
    _expect(
        "GetDeployments",
        {"DeviceName": "dev-1", "DeviceFleetName": "fleet", "Extra": 1},
        "Extra",
        "unknown_member",
    )
    _expect("GetDeployments", "DeviceName=dev-1", "", "type")
    with pytest.raises(ValueError, match="unknown sagemaker-edge operation"):
        validate_input("SendHeartbeats", {})


def test_json_body_botocore_sends_validates_as_decoded() -> None:
    # The endpoint server sees epoch numbers where the sender had datetimes.
    op = MODEL.operation_model("SendHeartbeat")
    body = create_serializer("rest-json").serialize_to_request(_heartbeat(), op)["body"]
    decoded = json.loads(body)
    assert isinstance(decoded["Models"][0]["LatestInference"], int)
    validate_send_heartbeat(decoded)


def test_list_bounds_and_unknown_types() -> None:
    # No list in today's model is bounded; a model update may bound one.
    shapes = ShapeResolver(
        {
            "Names": {"type": "list", "member": {"shape": "Name"}, "min": 1, "max": 2},
            "Name": {"type": "string", "min": 4},
            "Count": {"type": "integer"},
        }
    )
    names = shapes.get_shape_by_name("Names")
    validate_shape(names, ["abcd", "efgh"], "Names")
    for value, rule in (([], "min_items"), (["abcd"] * 3, "max_items")):
        with pytest.raises(HeartbeatValidationError) as info:
            validate_shape(names, value, "Names")
        assert (info.value.path, info.value.rule) == ("Names", rule)
    with pytest.raises(HeartbeatValidationError) as info:
        validate_shape(names, ["abcd", "abc"], "Names")
    assert (info.value.path, info.value.rule) == ("Names[1]", "min_length")
    with pytest.raises(NotImplementedError, match="integer"):
        validate_shape(shapes.get_shape_by_name("Count"), 3, "Count")


def test_import_does_no_work() -> None:
    code = "import sys, edgetelemetry.heartbeat; print('botocore' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
