"""Snapshots to Edge Manager ``SendHeartbeat`` requests: build, validate, split.

Nothing here sends anything or reads a clock; botocore's service model is loaded on first use
(``service``, the one place).  ``payload`` builds, ``split`` cuts, ``validate`` is the one
checker of the model's shapes (the endpoint uses it too), ``agent_metrics`` names the agent's
own figures.
"""

from __future__ import annotations

from .agent_metrics import agent_figures, window_metrics
from .payload import (
    DEFAULT_DIMENSION,
    DeviceIdentity,
    ModelState,
    PayloadOptions,
    build_heartbeat,
    sanitize_agent_version,
)
from .service import input_shape
from .split import HeartbeatTooLargeError, SplitLimits, request_bytes, split_heartbeat
from .validate import (
    MIN_TIMESTAMP,
    HeartbeatValidationError,
    validate_input,
    validate_send_heartbeat,
    validate_shape,
)

__all__ = [
    "DEFAULT_DIMENSION",
    "MIN_TIMESTAMP",
    "DeviceIdentity",
    "HeartbeatTooLargeError",
    "HeartbeatValidationError",
    "ModelState",
    "PayloadOptions",
    "SplitLimits",
    "agent_figures",
    "build_heartbeat",
    "input_shape",
    "request_bytes",
    "sanitize_agent_version",
    "split_heartbeat",
    "validate_input",
    "validate_send_heartbeat",
    "validate_shape",
    "window_metrics",
]
