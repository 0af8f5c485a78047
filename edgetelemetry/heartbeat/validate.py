"""Check Edge Manager request parameters against botocore's own ``sagemaker-edge`` model.

boto3 checks types, required members and minimum lengths; the service also enforced patterns,
maximum lengths and enums, and JSON has no NaN or Infinity.  This checks all of them for an
operation's input, so a payload is refused here rather than by the server days later.  The rules
are read from the model at run time, so a botocore update that changes a rule changes this check
too: each shape is compiled, on first use, into a checker that holds its rules already read
(members, required names, compiled patterns, bounds, enums) and remembers the strings that
passed, because walking the model on every request cost the endpoint a noticeable share of its
CPU per heartbeat.

Inputs may be Python values (``datetime`` timestamps) or JSON-decoded ones (epoch numbers), so
the endpoint checks incoming requests, and what operators register (names, deployments), with
the same code: this is the project's one checker of model shapes.
"""

from __future__ import annotations

import functools
import math
import re
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Union

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


def validate_input(operation: str, params: Mapping[str, Any]) -> None:
    """Raise ``HeartbeatValidationError`` for the first rule ``params`` break, else return."""
    _run(_operation_checker(operation), params, "")


def validate_send_heartbeat(params: Mapping[str, Any]) -> None:
    validate_input("SendHeartbeat", params)


def validate_shape(shape: Any, value: Any, path: str = "") -> None:
    """Check ``value`` against a botocore shape of the model; ``path`` names it in errors."""
    _run(_checker(shape), value, path)


# -- compiled checkers ----------------------------------------------------------------------
# A checker takes a value and returns, or raises _Broken.  It knows nothing of where the value
# sits: a valid request builds no path string at all, and a _Broken collects the path's steps
# as it passes up through the structures and lists that hold the value.

_Checker = Callable[[Any], None]
_Step = Union[str, int]  # a member name, or a list index (Python 3.9: no | at run time)


class _Broken(Exception):
    """A value breaks a rule; ``steps`` lead from the checked value down to it, innermost
    first."""

    def __init__(self, rule: str, value: Any, detail: str, step: _Step | None = None) -> None:
        super().__init__(rule)
        self.rule = rule
        self.value = value
        self.detail = detail
        self.steps: list[_Step] = [] if step is None else [step]

    def where(self, path: str) -> str:
        for step in reversed(self.steps):
            if isinstance(step, int):
                path = f"{path}[{step}]"
            else:
                path = (f"{path}." if path else "") + step
        return path

    def error(self, path: str) -> Exception:
        return HeartbeatValidationError(self.where(path), self.rule, self.value, self.detail)


class _UnsupportedType(_Broken):
    """A value reached a shape type nobody taught this module."""

    def __init__(self, kind: str) -> None:
        super().__init__("unsupported_type", kind, "")

    def error(self, path: str) -> Exception:
        where = self.where(path)
        return NotImplementedError(f"{where}: shape type {self.value!r} is not validated")


def _run(check: _Checker, value: Any, path: str) -> None:
    try:
        check(value)
        return
    except _Broken as exc:
        broken = exc
    # raised outside the handler, so the error carries no chained _Broken
    raise broken.error(path)


# Keyed by the shape object (botocore shapes compare by identity): the model's shapes live as
# long as the cached service model; one built for a single call takes its checker with it.
_checkers: weakref.WeakKeyDictionary[Any, _Checker] = weakref.WeakKeyDictionary()


def _checker(shape: Any) -> _Checker:
    check = _checkers.get(shape)
    if check is None:
        check = _checkers[shape] = _compile(shape, {})
    return check


@functools.cache
def _operation_checker(operation: str) -> _Checker:
    return _checker(input_shape(operation))


def _compile(shape: Any, by_name: dict[str, _Checker]) -> _Checker:
    """The checker of ``shape``; ``by_name`` holds those of the shapes compiled in this walk,
    all from one model, where a name is one shape."""
    name = shape.name
    known = by_name.get(name)
    if known is not None:
        return known
    # A shape that holds itself meets its name again while compiling: point that use at a
    # checker filled in below (no model today is recursive; the old walk handled one).
    finished: list[_Checker] = []
    by_name[name] = lambda value: finished[0](value)
    compile_kind = _COMPILERS.get(shape.type_name, _compile_unsupported)
    check = compile_kind(shape, by_name)
    finished.append(check)
    by_name[name] = check
    return check


def _compile_structure(shape: Any, by_name: dict[str, _Checker]) -> _Checker:
    members = shape.members
    member_checks = {name: _compile(member, by_name) for name, member in members.items()}
    required = tuple(shape.required_members)
    not_a_member = f"is not a member of {shape.name} ({', '.join(members)})"

    def check_structure(value: Any) -> None:
        # isinstance against the Mapping ABC is slow; a decoded request is a plain dict
        if type(value) is not dict and not isinstance(value, Mapping):
            raise _Broken("type", value, "must be a mapping")
        for name in required:
            if name not in value:
                raise _Broken("required", None, "is required", name)
        for name, item in value.items():
            check_member = member_checks.get(name)
            if check_member is None:
                raise _Broken("unknown_member", item, not_a_member, str(name))
            try:
                check_member(item)
            except _Broken as broken:
                broken.steps.append(name)
                raise

    return check_structure


def _compile_list(shape: Any, by_name: dict[str, _Checker]) -> _Checker:
    check_item = _compile(shape.member, by_name)
    meta = shape.metadata
    min_items, max_items = meta.get("min"), meta.get("max")

    def check_list(value: Any) -> None:
        # A str is a sequence too, but never a list member.
        if not isinstance(value, (list, tuple)):
            raise _Broken("type", value, "must be a list")
        if min_items is not None and len(value) < min_items:
            raise _Broken("min_items", value, f"needs >= {min_items} items")
        if max_items is not None and len(value) > max_items:
            raise _Broken("max_items", value, f"allows <= {max_items} items")
        for index, item in enumerate(value):
            try:
                check_item(item)
            except _Broken as broken:
                broken.steps.append(index)
                raise

    return check_list


# Strings that passed a patterned shape's checks, kept per shape: a few thousand names of at
# most a thousand characters (the model's longest bound) - a few MB at worst.
_PASSED_STRINGS_KEPT = 2048
_PASSED_STRING_LONGEST = 1000


def _compile_string(shape: Any, by_name: dict[str, _Checker]) -> _Checker:
    if shape.enum:
        allowed = frozenset(shape.enum)
        one_of = f"must be one of {', '.join(shape.enum)}"

        def check_enum(value: Any) -> None:
            if not isinstance(value, str):
                raise _Broken("type", value, "must be a str")
            if value not in allowed:
                raise _Broken("enum", value, one_of)

        return check_enum

    meta = shape.metadata
    min_length, max_length, pattern = meta.get("min"), meta.get("max"), meta.get("pattern")
    # Model patterns are partly anchored ('^...$') and partly not ('[a-z]+'); the service
    # matched the whole value either way.
    fullmatch = None if pattern is None else _fullmatch(pattern)
    # The model's patterns backtrack (about 1 us a match) and a fleet repeats the same few
    # metric names and dimensions in every heartbeat: remember strings that passed.  Emptied
    # when full, so hostile names cannot grow it; only an exact str, whose checks depend on its
    # characters alone.
    passed: set[str] = set()

    def check_string(value: Any) -> None:
        if type(value) is str and value in passed:
            return
        if not isinstance(value, str):
            raise _Broken("type", value, "must be a str")
        if min_length is not None and len(value) < min_length:
            raise _Broken("min_length", value,
                          f"is {len(value)} characters, needs >= {min_length}")
        if max_length is not None and len(value) > max_length:
            raise _Broken("max_length", value,
                          f"is {len(value)} characters, allows <= {max_length}")
        if fullmatch is None:
            return
        if fullmatch(value) is None:
            raise _Broken("pattern", value, f"must fully match {pattern}")
        if type(value) is str and len(value) <= _PASSED_STRING_LONGEST:
            if len(passed) >= _PASSED_STRINGS_KEPT:
                passed.clear()
            passed.add(value)

    return check_string


@functools.cache
def _fullmatch(pattern: str) -> Callable[[str], Any]:
    return re.compile(pattern).fullmatch


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too big for a double
        return False


_INF = math.inf


def _check_number(value: Any) -> None:
    # a plain float is finite when it lies between the infinities (NaN compares false)
    if type(value) is float and -_INF < value < _INF:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _Broken("type", value, "must be an int or float")
    if not _finite(value):
        raise _Broken("finite", value, "JSON has no NaN or Infinity")


def _check_timestamp(value: Any) -> None:
    # What the endpoint sees: epoch seconds in range, which also makes them finite numbers.
    kind = type(value)
    if (kind is int or kind is float) and _MIN_EPOCH <= value <= _MAX_EPOCH:
        return
    if isinstance(value, datetime):
        # botocore reads a naive datetime as UTC; so do we.
        aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        if aware < MIN_TIMESTAMP:
            raise _Broken("min_timestamp", value, f"is before {MIN_TIMESTAMP.isoformat()}")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _Broken("type", value, "must be a datetime or epoch seconds (int or float)")
    if not _finite(value):
        raise _Broken("finite", value, "JSON has no NaN or Infinity")
    if value < _MIN_EPOCH:
        raise _Broken("min_timestamp", value, f"is before {MIN_TIMESTAMP.isoformat()}")
    if value > _MAX_EPOCH:
        raise _Broken("max_timestamp", value, "is after year 9999")


def _compile_scalar(check: _Checker) -> Callable[[Any, dict[str, _Checker]], _Checker]:
    return lambda shape, by_name: check


def _compile_unsupported(shape: Any, by_name: dict[str, _Checker]) -> _Checker:
    # The model uses no other type today; if an update brings one, fail loudly - when a value
    # reaches it, as the walk did, so the error names where.
    kind = shape.type_name

    def check_unsupported(value: Any) -> None:
        raise _UnsupportedType(kind)

    return check_unsupported


_COMPILERS: dict[str, Callable[[Any, dict[str, _Checker]], _Checker]] = {
    "structure": _compile_structure,
    "list": _compile_list,
    "string": _compile_string,
    "double": _compile_scalar(_check_number),
    "timestamp": _compile_scalar(_check_timestamp),
}
