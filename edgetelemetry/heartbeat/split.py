"""Cut one ``SendHeartbeat`` payload into requests that each fit the limits.

Greedy and in order, so the result is a pure function of the payload and the limits: every
metric lands in exactly one request, in its original order.  Every request carries the payload's
top-level identity (``AgentVersion``, ``DeviceName``, ``DeviceFleetName``); ``DeploymentResult``
goes in the first request only and ``AgentMetrics`` start there (spilling over only beyond
``max_agent_metrics``); a model cut over several requests repeats its name, version and times.

Sizes are measured as botocore sends the body: ``json.dumps`` with its default separators,
ASCII escapes, and timestamps converted by the installed botocore's own serializer (whole
seconds up to botocore 1.43, fractional seconds after).  A request is assembled piece by piece, so
sizes are added up rather than re-measured, keeping the split linear in the payload.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from .service import input_shape
from .validate import HeartbeatValidationError

__all__ = ["HeartbeatTooLargeError", "SplitLimits", "request_bytes", "split_heartbeat"]

_SEP = len(json.dumps([1, 2])) - 2  # ", " between items and members, as json.dumps writes


@dataclass(frozen=True)
class SplitLimits:
    """Per-request limits.  The service never published its own; these are ours, sized so a
    request retried over a poor link stays small (~45 series x 11 statistics per model)."""

    max_models: int = 50
    max_model_metrics: int = 500
    max_agent_metrics: int = 100
    max_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        for name in ("max_models", "max_model_metrics", "max_agent_metrics", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"SplitLimits.{name} must be >= 1, got {getattr(self, name)}")


class HeartbeatTooLargeError(HeartbeatValidationError):
    """One piece (a metric, a model with no metrics, the deployment result) needs more than
    ``limit`` bytes even alone in a request; ``size`` is what that request would take."""

    def __init__(self, path: str, value: Any, size: int, limit: int) -> None:
        super().__init__(
            path, "max_bytes", value, f"needs a {size}-byte request, the limit is {limit}"
        )
        self.size = size
        self.limit = limit


def request_bytes(params: Mapping[str, Any], operation: str = "SendHeartbeat") -> int:
    """The size of the JSON body botocore sends for ``params``."""
    return _size(params, input_shape(operation))


def split_heartbeat(
    params: Mapping[str, Any], limits: SplitLimits = SplitLimits()
) -> list[dict[str, Any]]:
    """``params`` (a valid payload, e.g. from ``build_heartbeat``) as requests within ``limits``.

    Raises ``HeartbeatTooLargeError`` when one piece cannot fit even alone in a request.
    """
    return _Splitter(params, limits).run()


# Members that are cut up or sent once; every other top-level member goes in every request.
_BODY_KEYS = ("Models", "AgentMetrics", "DeploymentResult")

_Cost = Callable[["_Request"], "int | None"]


class _Request:
    """One request being filled, with its body size kept up to date."""

    def __init__(self, body: dict[str, Any], size: int) -> None:
        self.body = body
        self.size = size
        self.entry_of: int | None = None  # index of the model the last entry belongs to
        self.entry: dict[str, Any] = {}

    def _append_cost(self, key: str, item_size: int) -> int:
        return item_size + (_SEP if self.body[key] else 0)

    def agent_cost(self, size: int, limits: SplitLimits) -> int | None:
        if len(self.body["AgentMetrics"]) >= limits.max_agent_metrics:
            return None
        return self._append_cost("AgentMetrics", size)

    def entry_cost(self, head_size: int, limits: SplitLimits) -> int | None:
        if len(self.body["Models"]) >= limits.max_models:
            return None
        return self._append_cost("Models", head_size)

    def metric_cost(self, index: int, head_size: int, size: int, limits: SplitLimits) -> int | None:
        if self.entry_of != index:  # the model needs an entry here first
            cost = self.entry_cost(head_size, limits)
            return None if cost is None else cost + size
        count = len(self.entry["ModelMetrics"])
        if count >= limits.max_model_metrics:
            return None
        return size + (_SEP if count else 0)

    def open_entry(self, index: int, entry: dict[str, Any]) -> None:
        self.body["Models"].append(entry)
        self.entry_of, self.entry = index, entry


class _Splitter:
    def __init__(self, params: Mapping[str, Any], limits: SplitLimits) -> None:
        from botocore.model import ListShape

        self.shape = input_shape("SendHeartbeat")
        models, metrics = self.shape.members["Models"], self.shape.members["AgentMetrics"]
        assert isinstance(models, ListShape) and isinstance(metrics, ListShape)
        self.model_shape = models.member
        self.metric_shape = metrics.member
        self.params = params
        self.limits = limits
        self.header = {k: v for k, v in params.items() if k not in _BODY_KEYS}
        self.out: list[_Request] = []
        self.agent_phase = "AgentMetrics" in params

    def run(self) -> list[dict[str, Any]]:
        req = self.fresh()
        for j, metric in enumerate(self.params.get("AgentMetrics", ())):
            size = _size(metric, self.metric_shape)
            req, cost = self.place(
                req, partial(_Request.agent_cost, size=size, limits=self.limits),
                f"AgentMetrics[{j}]", metric,
            )
            req.body["AgentMetrics"].append(dict(metric))
            req.size += cost
        self.agent_phase = False

        for i, model in enumerate(self.params.get("Models", ())):
            head = {k: v for k, v in model.items() if k != "ModelMetrics"}
            metrics = model.get("ModelMetrics")
            head_size = _size(self.entry(head, metrics), self.model_shape)
            if not metrics:  # a model without metrics still appears once, as it was
                req, cost = self.place(
                    req, partial(_Request.entry_cost, head_size=head_size, limits=self.limits),
                    f"Models[{i}]", model,
                )
                req.open_entry(i, self.entry(head, metrics))
                req.size += cost
                continue
            for j, metric in enumerate(metrics):
                size = _size(metric, self.metric_shape)
                req, cost = self.place(
                    req,
                    partial(_Request.metric_cost, index=i, head_size=head_size, size=size,
                            limits=self.limits),
                    f"Models[{i}].ModelMetrics[{j}]",
                    metric,
                )
                if req.entry_of != i:
                    req.open_entry(i, self.entry(head, metrics))
                req.entry["ModelMetrics"].append(dict(metric))
                req.size += cost
        return [r.body for r in self.out]

    @staticmethod
    def entry(head: dict[str, Any], metrics: Any) -> dict[str, Any]:
        """A new entry for a model: its header, and an empty ModelMetrics if it had the key."""
        return dict(head) if metrics is None else {**head, "ModelMetrics": []}

    def fresh(self) -> _Request:
        body = dict(self.header)
        if "Models" in self.params:
            body["Models"] = []
        if not self.out and "DeploymentResult" in self.params:
            body["DeploymentResult"] = self.params["DeploymentResult"]
        if self.agent_phase:
            body["AgentMetrics"] = []
        req = _Request(body, _size(body, self.shape))
        if req.size > self.limits.max_bytes:
            path = "DeploymentResult" if "DeploymentResult" in body else ""
            limit = self.limits.max_bytes
            raise HeartbeatTooLargeError(path, body.get(path, body), req.size, limit)
        self.out.append(req)
        return req

    def place(self, req: _Request, cost: _Cost, path: str, value: Any) -> tuple[_Request, int]:
        """The request a piece goes into (``req`` if it fits, else a new one) and its cost."""
        extra = cost(req)
        if extra is not None and req.size + extra <= self.limits.max_bytes:
            return req, extra
        new = self.fresh()
        extra = cost(new)
        assert extra is not None  # every count limit is >= 1: a fresh request has room
        if new.size + extra > self.limits.max_bytes:
            raise HeartbeatTooLargeError(path, value, new.size + extra, self.limits.max_bytes)
        return new, extra


def _size(value: Any, shape: Any) -> int:
    return len(json.dumps(_wire(value, shape)))


def _wire(value: Any, shape: Any) -> Any:
    """``value`` as botocore's rest-json serializer puts it in the body."""
    kind = shape.type_name
    if kind == "structure":
        return {k: _wire(v, shape.members[k]) for k, v in value.items()}
    if kind == "list":
        return [_wire(v, shape.member) for v in value]
    if kind == "timestamp":
        return _timestamp_serializer()._convert_timestamp_to_str(value, "unixtimestamp")
    return value


@functools.lru_cache(maxsize=1)
def _timestamp_serializer() -> Any:
    # the wire form of a timestamp changed between botocore releases: ask the one installed
    from botocore.serialize import create_serializer

    return create_serializer("rest-json", include_validation=False)
