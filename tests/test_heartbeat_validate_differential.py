"""The compiled validator against a plain walk of the model, on seeded random bad input.

``reference_validate`` below is the straightforward recursive walk the validator was before it
compiled shapes into checkers.  Each case takes a valid input of an operation (or of a shape the
project checks on its own), breaks it in one to three random places (wrong types, missing and
unknown members, lengths, patterns, enums, NaN and infinities, bools, huge ints, timestamps out
of range, naive and aware datetimes, nested lists) and asks both: they must refuse it with the
same error (type, path, rule, message, the same offending object) or both accept it.  Every
input is checked twice, so the remembered-strings shortcut is exercised on values it has seen.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import botocore.session
import pytest
from botocore.model import ShapeResolver

from edgetelemetry.heartbeat import validate
from edgetelemetry.heartbeat.validate import (
    MIN_TIMESTAMP,
    HeartbeatValidationError,
    validate_input,
    validate_shape,
)

MODEL = botocore.session.get_session().get_service_model("sagemaker-edge")
UTC = timezone.utc
_MIN_EPOCH = MIN_TIMESTAMP.timestamp()
_MAX_EPOCH = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


# -- the reference: the plain walk ----------------------------------------------------------


def reference_validate(shape: Any, value: Any, path: str = "") -> None:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, Mapping):
            raise HeartbeatValidationError(path, "type", value, "must be a mapping")
        prefix = f"{path}." if path else ""
        for name in shape.required_members:
            if name not in value:
                raise HeartbeatValidationError(prefix + name, "required", None, "is required")
        for name, item in value.items():
            if name not in shape.members:
                raise HeartbeatValidationError(
                    prefix + str(name), "unknown_member", item,
                    f"is not a member of {shape.name} ({', '.join(shape.members)})")
            reference_validate(shape.members[name], item, prefix + name)
    elif kind == "list":
        if not isinstance(value, (list, tuple)):
            raise HeartbeatValidationError(path, "type", value, "must be a list")
        meta = shape.metadata
        if "min" in meta and len(value) < meta["min"]:
            raise HeartbeatValidationError(path, "min_items", value,
                                           f"needs >= {meta['min']} items")
        if "max" in meta and len(value) > meta["max"]:
            raise HeartbeatValidationError(path, "max_items", value,
                                           f"allows <= {meta['max']} items")
        for i, item in enumerate(value):
            reference_validate(shape.member, item, f"{path}[{i}]")
    elif kind == "string":
        _reference_string(shape, value, path)
    elif kind == "double":
        _reference_number(value, path)
    elif kind == "timestamp":
        _reference_timestamp(value, path)
    else:
        raise NotImplementedError(f"{path}: shape type {kind!r} is not validated")


def _reference_string(shape: Any, value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise HeartbeatValidationError(path, "type", value, "must be a str")
    if shape.enum:
        if value not in shape.enum:
            raise HeartbeatValidationError(path, "enum", value,
                                           f"must be one of {', '.join(shape.enum)}")
        return
    meta = shape.metadata
    if "min" in meta and len(value) < meta["min"]:
        raise HeartbeatValidationError(
            path, "min_length", value, f"is {len(value)} characters, needs >= {meta['min']}")
    if "max" in meta and len(value) > meta["max"]:
        raise HeartbeatValidationError(
            path, "max_length", value, f"is {len(value)} characters, allows <= {meta['max']}")
    if "pattern" in meta and re.fullmatch(meta["pattern"], value) is None:
        raise HeartbeatValidationError(path, "pattern", value,
                                       f"must fully match {meta['pattern']}")


def _reference_finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _reference_number(value: Any, path: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise HeartbeatValidationError(path, "type", value, "must be an int or float")
    if not _reference_finite(value):
        raise HeartbeatValidationError(path, "finite", value, "JSON has no NaN or Infinity")


def _reference_timestamp(value: Any, path: str) -> None:
    before = f"is before {MIN_TIMESTAMP.isoformat()}"
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        if aware < MIN_TIMESTAMP:
            raise HeartbeatValidationError(path, "min_timestamp", value, before)
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise HeartbeatValidationError(
            path, "type", value, "must be a datetime or epoch seconds (int or float)")
    if not _reference_finite(value):
        raise HeartbeatValidationError(path, "finite", value, "JSON has no NaN or Infinity")
    if value < _MIN_EPOCH:
        raise HeartbeatValidationError(path, "min_timestamp", value, before)
    if value > _MAX_EPOCH:
        raise HeartbeatValidationError(path, "max_timestamp", value, "is after year 9999")


# -- what both are asked --------------------------------------------------------------------


def _outcome(check: Any, shape: Any, value: Any, path: str) -> tuple[Any, ...] | None:
    try:
        check(shape, value, path)
    except (HeartbeatValidationError, NotImplementedError) as exc:
        if isinstance(exc, HeartbeatValidationError):
            return type(exc), exc.path, exc.rule, str(exc), id(exc.value)
        return type(exc), str(exc)
    return None


def _agree(shape: Any, value: Any, path: str = "") -> tuple[Any, ...] | None:
    expected = _outcome(reference_validate, shape, value, path)
    # twice: the second run meets strings the first one remembered
    for _ in range(2):
        assert _outcome(validate_shape, shape, value, path) == expected, (path, value)
    return expected


# -- valid inputs, drawn at random from the model -------------------------------------------

_STRING_CANDIDATES = (
    "abcd", "a", "abcd1234", "latency-ms-p99", "camera-front/0/1", "resnet18", "1.0 beta_2",
    "jetson_01", "line-3", "x" * 63, "y" * 100, "a--b", "Z9", "model.v2", "s3://bucket/m.tgz",
)


def _valid(shape: Any, rng: random.Random, depth: int = 0) -> Any:
    kind = shape.type_name
    if kind == "structure":
        names = [n for n in shape.members
                 if n in shape.required_members or rng.random() < 0.7]
        rng.shuffle(names)  # the value's order decides which broken member is reported first
        return {n: _valid(shape.members[n], rng, depth + 1) for n in names}
    if kind == "list":
        return [_valid(shape.member, rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "string":
        if shape.enum:
            return rng.choice(shape.enum)
        meta = shape.metadata
        fits = [c for c in _STRING_CANDIDATES
                if meta.get("min", 0) <= len(c) <= meta.get("max", 1 << 30)
                and re.fullmatch(meta.get("pattern", "(?s).*"), c)]
        assert fits, f"no candidate string fits {shape.name} {meta}"
        return rng.choice(fits)
    if kind == "double":
        return rng.choice([0, 1.5, -3, 1e308, 10**300, 7.25])
    if kind == "timestamp":
        return rng.choice([datetime(2024, 5, 1, 12, tzinfo=UTC), datetime(2024, 5, 1),
                           1_700_000_000, 1_700_000_000.5, _MAX_EPOCH, _MIN_EPOCH])
    raise AssertionError(f"the model gained a {kind} shape")


# -- breaking them --------------------------------------------------------------------------

_PLUS_5 = timezone(timedelta(hours=5))
_ODD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 10**400, -(10**400), 1.5, math.nan, math.inf, -math.inf,
    "", "x", "abc", "abcd", "p99", "a" * 64, "a" * 101, "a" * 1001, "latency_ms", "latency-",
    "-dev", "camera_front", "line.3", "1.0-beta", "DEPLOY", "deploy", "SUCCESS", "MAYBE", "é" * 5,
    "2024-01-01T00:00:00Z", b"abcd", datetime(1970, 1, 1, tzinfo=UTC), datetime(2019, 12, 31),
    datetime(2024, 1, 1), datetime(2020, 1, 1, 3, tzinfo=_PLUS_5),  # 2019-12-31 22:00 UTC
    datetime(2020, 1, 1, 6, tzinfo=_PLUS_5), 0.0, 1_577_836_799, 1_577_836_799.5, 1_577_836_800,
    _MAX_EPOCH, _MAX_EPOCH + 1, 1e300, -1e300, [], [[]], [["abcd"]], {}, {"Bogus": 1}, (),
    ("abcd",), {1: "x"}, object(),
)


def _nodes(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Where in ``value`` a mutation may land: every member and item, and the value itself."""
    yield at
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _nodes(item, at + (name,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nodes(item, at + (i,))


def _get(value: Any, at: tuple[Any, ...]) -> Any:
    for step in at:
        value = value[step]
    return value


def _odd(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(_ODD_VALUES))  # never one list in two places


def _mutate(value: Any, rng: random.Random) -> Any:
    root = [value]
    where = rng.choice(list(_nodes(value)))
    parent, key = (root, 0) if not where else (_get(value, where[:-1]), where[-1])
    target = parent[key]
    move = rng.randrange(8)
    if move == 0 and isinstance(target, dict) and target:
        del target[rng.choice(list(target))]  # a member goes missing (maybe a required one)
    elif move == 1 and isinstance(target, dict):
        target[rng.choice(["Bogus", "deviceName", 7, ""])] = _odd(rng)
    elif move == 2 and isinstance(target, list):
        target.append(_odd(rng) if rng.random() < 0.5 else [copy.deepcopy(target[:1])])
    elif move == 3 and isinstance(target, list) and target:
        target.insert(0, target.pop())  # reorder: which broken item comes first
    elif move == 4 and isinstance(target, dict):
        items = list(target.items())
        rng.shuffle(items)
        target.clear()
        target.update(items)
    elif move == 5 and isinstance(target, list):
        parent[key] = tuple(target)
    elif move == 6 and isinstance(target, str):
        parent[key] = target * rng.choice([0, 2, 20, 200]) + rng.choice(["", "_", "-", " ", "/"])
    else:
        parent[key] = _odd(rng)
    return root[0]


# -- the cases ------------------------------------------------------------------------------

# What the project checks: every operation's input, the deployment registration checks, the
# deployment result the agent checks under its own path, and the names registration checks.
_TARGETS: list[tuple[str, Any, str]] = [
    *((op, MODEL.operation_model(op).input_shape, "") for op in MODEL.operation_names),
    ("EdgeDeployment", MODEL.shape_for("EdgeDeployment"), "deployment"),
    ("DeploymentResult", MODEL.operation_model("SendHeartbeat").input_shape.members[
        "DeploymentResult"], "DeploymentResult"),
    ("DeviceName", MODEL.shape_for("DeviceName"), "device"),
    ("DeviceFleetName", MODEL.shape_for("DeviceFleetName"), "fleet"),
]


@pytest.mark.parametrize(("what", "shape", "path"), _TARGETS, ids=[t[0] for t in _TARGETS])
def test_random_breakage_gets_the_reference_walks_error(what: str, shape: Any,
                                                        path: str) -> None:
    rng = random.Random(f"validate-differential-{what}")
    tries = 1500 if what == "SendHeartbeat" else 300
    refused: set[str] = set()
    for _ in range(tries):
        value = _valid(shape, rng)
        assert _agree(shape, value, path) is None
        for _ in range(rng.randint(1, 3)):
            value = _mutate(value, rng)
        outcome = _agree(shape, value, path)
        if outcome is not None:
            refused.add(outcome[2] if outcome[0] is HeartbeatValidationError else "?")
    # the breakage reached the rules it is meant to (guards against mutations that do nothing)
    wanted = {"type"} if shape.type_name == "string" else {"type", "unknown_member"}
    if shape.type_name == "string" or what in ("SendHeartbeat", "EdgeDeployment"):
        wanted |= {"min_length", "max_length", "pattern"}
    if what == "SendHeartbeat":
        wanted |= {"required", "finite", "min_timestamp", "max_timestamp", "enum"}
    assert wanted <= refused, sorted(refused)


def test_operations_agree_through_validate_input() -> None:
    rng = random.Random("validate-differential-operations")
    for _ in range(200):
        op = rng.choice(MODEL.operation_names)
        shape = MODEL.operation_model(op).input_shape
        value = _mutate(_valid(shape, rng), rng)
        expected = _outcome(reference_validate, shape, value, "")
        assert _outcome(_by_operation(op), shape, value, "") == expected


def _by_operation(op: str) -> Any:
    return lambda _shape, value, _path: validate_input(op, value)


def test_remembered_strings_are_forgotten_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny bound: the remembered set empties again and again while answers stay the same.
    monkeypatch.setattr(validate, "_PASSED_STRINGS_KEPT", 3)
    shape = MODEL.operation_model("SendHeartbeat").input_shape
    rng = random.Random("validate-differential-forget")
    for _ in range(300):
        _agree(shape, _mutate(_valid(shape, rng), rng))


# A model the service does not have: bounded lists, a shape that holds itself, a type the
# validator does not know, and a list of lists.
_TOY = ShapeResolver({
    "Tree": {"type": "structure", "required": ["Name"], "members": {
        "Name": {"shape": "Name"}, "Children": {"shape": "Trees"}, "Count": {"shape": "Count"},
        "Grid": {"shape": "Grid"}, "When": {"shape": "When"}, "Level": {"shape": "Level"},
    }},
    "Trees": {"type": "list", "member": {"shape": "Tree"}, "min": 1, "max": 3},
    "Grid": {"type": "list", "member": {"shape": "Row"}, "max": 2},
    "Row": {"type": "list", "member": {"shape": "Weight"}, "min": 2},
    "Name": {"type": "string", "min": 2, "max": 8, "pattern": "[a-z]+"},
    "Level": {"type": "string", "enum": ["LOW", "HIGH"]},
    "Weight": {"type": "double"},
    "When": {"type": "timestamp"},
    "Count": {"type": "integer"},
})


def _toy_value(rng: random.Random, depth: int = 0) -> Any:
    tree: dict[str, Any] = {"Name": rng.choice(["ab", "tree", "abcdefgh"])}
    if depth < 3 and rng.random() < 0.6:
        count = rng.choice([1, 1, 2, 2, 3, 0, 4])  # sometimes outside the list bounds
        tree["Children"] = [_toy_value(rng, depth + 1) for _ in range(count)]
    if rng.random() < 0.3:
        tree["Grid"] = [[1.0, 2.5], [0, -1]][: rng.randint(0, 2)]
    if rng.random() < 0.3:
        tree["When"] = rng.choice([1_700_000_000, datetime(2024, 1, 1)])
    if rng.random() < 0.3:
        tree["Level"] = rng.choice(["LOW", "HIGH"])
    if rng.random() < 0.05:
        tree["Count"] = 3  # a type nobody validates: NotImplementedError, naming where
    items = list(tree.items())
    rng.shuffle(items)
    return dict(items)


def test_toy_model_with_bounded_lists_recursion_and_unknown_types() -> None:
    tree = _TOY.get_shape_by_name("Tree")
    rng = random.Random("validate-differential-toy")
    rules: set[str] = set()
    for _ in range(1000):
        value = _toy_value(rng)
        for _ in range(rng.randint(0, 2)):
            value = _mutate(value, rng)
        outcome = _agree(tree, value, rng.choice(["", "tree", "trees[2]"]))
        if outcome is not None:
            rules.add(outcome[2] if outcome[0] is HeartbeatValidationError else "unsupported")
    assert {"min_items", "max_items", "unsupported", "pattern", "enum", "required"} <= rules, rules
