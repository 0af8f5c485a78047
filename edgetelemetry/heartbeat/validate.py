"""Check Edge Manager request parameters against botocore's own ``sagemaker-edge`` model.

boto3 checks types, required members and minimum lengths; the service also enforced patterns,
maximum lengths and enums, and JSON has no NaN or Infinity.  This walks an operation's input
shape and checks all of them, so a payload is refused here rather than by the server days
later.  The rules are read from the model at run time (loaded once, on first use), so a botocore
update that changes a rule changes this check too.

Inputs may be Python values (``datetime`` timestamps) or JSON-decoded ones (epoch numbers), so
the endpoint checks incoming requests, and what operators register (names, deployments), with
the same code: this is the project's one checker of model shapes.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..errors import EdgeTelemetryError
from .service import input_shape

__all__ = [
    "HeartbeatValidationError",
    "MIN_TIMESTAMP",
    "input_shape",
    "validate_input",
    "validate_send_heartbeat",
    "validate_shape",
]

# Our policy, not the service's: a device without a set clock reports 1970; refuse that rather
# than file metrics decades in the past.
MIN_TIMESTAMP = datetime(2020, 1, 1, tzinfo=timezone.utc)
_MIN_EPOCH = MIN_TIMESTAMP.timestamp()
# The last second a datetime can hold: any accepted epoch number converts to a datetime.
_MAX_EPOCH = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()


class HeartbeatValidationError(EdgeTelemetryError, ValueError):
    """A request parameter breaks a rule: ``path`` says where, ``rule`` which, ``value`` what."""

    def __init__(self, path: str, rule: str, value: Any, detail: str = "") -> None:
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        where = path or "<input>"
        super().__init__(f"{where}: breaks rule {rule!r}{': ' + detail if detail else ''} "
                         f"(value {shown})")
        self.path = path
        self.rule = rule
        self.value = value


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def validate_input(operation: str, params: Mapping[str, Any]) -> None:
    """Raise ``HeartbeatValidationError`` for the first rule ``params`` break, else return."""
    validate_shape(input_shape(operation), params)


def validate_send_heartbeat(params: Mapping[str, Any]) -> None:
    validate_input("SendHeartbeat", params)


def validate_shape(shape: Any, value: Any, path: str = "") -> None:
    """Check ``value`` against a botocore shape of the model; ``path`` names it in errors."""
    kind = shape.type_name
    if kind == "structure":
        _check_structure(shape, value, path)
    elif kind == "list":
        _check_list(shape, value, path)
    elif kind == "string":
        _check_string(shape, value, path)
    elif kind == "double":
        _check_number(value, path)
    elif kind == "timestamp":
        _check_timestamp(value, path)
    else:
        # The model uses no other type today; if an update brings one, fail loudly.
        raise NotImplementedError(f"{path}: shape type {kind!r} is not validated")


def _check_structure(shape: Any, value: Any, path: str) -> None:
    if not isinstance(value, Mapping):
        raise HeartbeatValidationError(path, "type", value, "must be a mapping")
    prefix = f"{path}." if path else ""
    for name in shape.required_members:
        if name not in value:
            raise HeartbeatValidationError(prefix + name, "required", None, "is required")
    members = shape.members
    for name, item in value.items():
        if name not in members:
            raise HeartbeatValidationError(
                prefix + str(name), "unknown_member", item,
                f"is not a member of {shape.name} ({', '.join(members)})",
            )
        validate_shape(members[name], item, prefix + name)


def _check_list(shape: Any, value: Any, path: str) -> None:
    # A str is a sequence too, but never a list member.
    if not isinstance(value, (list, tuple)):
        raise HeartbeatValidationError(path, "type", value, "must be a list")
    meta = shape.metadata
    if "min" in meta and len(value) < meta["min"]:
        raise HeartbeatValidationError(path, "min_items", value, f"needs >= {meta['min']} items")
    if "max" in meta and len(value) > meta["max"]:
        raise HeartbeatValidationError(path, "max_items", value, f"allows <= {meta['max']} items")
    for i, item in enumerate(value):
        validate_shape(shape.member, item, f"{path}[{i}]")


def _check_string(shape: Any, value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise HeartbeatValidationError(path, "type", value, "must be a str")
    if shape.enum:
        if value not in shape.enum:
            raise HeartbeatValidationError(
                path, "enum", value, f"must be one of {', '.join(shape.enum)}"
            )
        return
    meta = shape.metadata
    if "min" in meta and len(value) < meta["min"]:
        raise HeartbeatValidationError(
            path, "min_length", value, f"is {len(value)} characters, needs >= {meta['min']}"
        )
    if "max" in meta and len(value) > meta["max"]:
        raise HeartbeatValidationError(
            path, "max_length", value, f"is {len(value)} characters, allows <= {meta['max']}"
        )
    # Model patterns are partly anchored ('^...$') and partly not ('[a-z]+'); the service
    # matched the whole value either way.
    if "pattern" in meta and _pattern(meta["pattern"]).fullmatch(value) is None:
        raise HeartbeatValidationError(
            path, "pattern", value, f"must fully match {meta['pattern']}"
        )


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too big for a double
        return False


def _check_number(value: Any, path: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise HeartbeatValidationError(path, "type", value, "must be an int or float")
    if not _finite(value):
        raise HeartbeatValidationError(path, "finite", value, "JSON has no NaN or Infinity")


def _check_timestamp(value: Any, path: str) -> None:
    if isinstance(value, datetime):
        # botocore reads a naive datetime as UTC; so do we.
        aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        if aware < MIN_TIMESTAMP:
            raise HeartbeatValidationError(
                path, "min_timestamp", value, f"is before {MIN_TIMESTAMP.isoformat()}"
            )
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise HeartbeatValidationError(
            path, "type", value, "must be a datetime or epoch seconds (int or float)"
        )
    if not _finite(value):
        raise HeartbeatValidationError(path, "finite", value, "JSON has no NaN or Infinity")
    if value < _MIN_EPOCH:
        raise HeartbeatValidationError(
            path, "min_timestamp", value, f"is before {MIN_TIMESTAMP.isoformat()}"
        )
    if value > _MAX_EPOCH:
        raise HeartbeatValidationError(path, "max_timestamp", value, "is after year 9999")
