"""The ``sagemaker-edge`` service model, read from botocore at run time, and a shape checker.

The endpoint serves what botocore's model describes, so it never carries its own copy: operation
names, HTTP paths and shapes come from ``botocore.session.get_session().get_service_model``.

``check_shape`` walks a JSON-decoded value against any model shape (types, required members,
length bounds, full-match patterns, enums).  The server uses it for what operators store:
registry names and deployment definitions (``EdgeDeployment``, an output shape).  Requests are
checked by the project's input validator, ``edgetelemetry.heartbeat.validate.validate_input``, so
devices and endpoint apply one rule set (including its policy of refusing pre-2020 timestamps).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

from botocore.model import OperationModel, ServiceModel, Shape, StructureShape

__all__ = [
    "SERVICE_NAME",
    "SIGNING_NAME",
    "ShapeError",
    "check_shape",
    "operations",
    "service_model",
    "shape",
]

SERVICE_NAME = "sagemaker-edge"
SIGNING_NAME = "sagemaker"


class ShapeError(ValueError):
    """A value breaks a model shape; ``path`` is where (``Models[0].ModelName``), ``rule`` what."""

    def __init__(self, path: str, rule: str, value: object) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{path or '<body>'}: value {shown} failed to satisfy constraint: {rule}")
        self.path = path
        self.rule = rule
        self.value = value


@functools.lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    """botocore's ``sagemaker-edge`` model (loaded once; loading takes a few milliseconds)."""
    import botocore.session

    return botocore.session.get_session().get_service_model(SERVICE_NAME)


@functools.lru_cache(maxsize=1)
def operations() -> dict[str, OperationModel]:
    """``request path -> operation model`` for every POST operation of the model."""
    model = service_model()
    routes: dict[str, OperationModel] = {}
    for name in model.operation_names:
        op = model.operation_model(name)
        if op.http.get("method", "POST") == "POST":
            routes[op.http.get("requestUri", "/" + name)] = op
    return routes


def shape(name: str) -> Shape:
    """A named shape of the model (``EdgeDeployment``, ``DeviceName``...)."""
    return service_model().shape_for(name)


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _join(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


def check_shape(model_shape: Shape, value: Any, path: str = "") -> None:
    """Raise ``ShapeError`` at the first place ``value`` breaks ``model_shape``.

    Strict where the service was: unknown structure members are refused, strings must match the
    whole pattern, numbers must be finite (JSON has no NaN), timestamps are epoch seconds.
    """
    kind = model_shape.type_name
    meta = model_shape.metadata
    if kind == "structure":
        assert isinstance(model_shape, StructureShape)
        if not isinstance(value, Mapping):
            raise ShapeError(path, "must be a JSON object", value)
        members = model_shape.members
        for key in value:
            if key not in members:
                raise ShapeError(_join(path, str(key)), "unknown member", value[key])
        for req in model_shape.required_members:
            if value.get(req) is None:
                raise ShapeError(_join(path, req), "member is required", None)
        for key, item in value.items():
            if item is not None:
                check_shape(members[key], item, _join(path, key))
    elif kind == "list":
        if not isinstance(value, list):
            raise ShapeError(path, "must be a JSON array", value)
        _check_length(meta, len(value), path, value)
        member = model_shape.member
        for i, item in enumerate(value):
            check_shape(member, item, f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            raise ShapeError(path, "must be a string", value)
        enum = model_shape.enum
        if enum and value not in enum:
            raise ShapeError(path, f"must be one of {', '.join(enum)}", value)
        _check_length(meta, len(value), path, value)
        pattern = meta.get("pattern")
        if pattern and _compiled(pattern).fullmatch(value) is None:
            raise ShapeError(path, f"must match the pattern {pattern}", value)
    elif kind in ("double", "float", "timestamp", "integer", "long"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            what = "epoch seconds as a JSON number" if kind == "timestamp" else "a number"
            raise ShapeError(path, f"must be {what}", value)
        if not math.isfinite(value):
            raise ShapeError(path, "must be finite", value)
        if kind in ("integer", "long") and not float(value).is_integer():
            raise ShapeError(path, "must be an integer", value)
        if kind == "timestamp" and value < 0:
            raise ShapeError(path, "must not be before 1970", value)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ShapeError(path, "must be true or false", value)
    else:  # blob, map: not used by this service; refuse rather than guess
        raise ShapeError(path, f"unsupported shape type {kind}", value)


def _check_length(meta: Mapping[str, Any], length: int, path: str, value: object) -> None:
    low = meta.get("min")
    high = meta.get("max")
    if low is not None and length < low:
        raise ShapeError(path, f"length must be at least {low}", value)
    if high is not None and length > high:
        raise ShapeError(path, f"length must be at most {high}", value)
