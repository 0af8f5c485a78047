"""Snapshots to Edge Manager ``SendHeartbeat`` requests: build, validate, split.

Nothing here sends anything or reads a clock; botocore's service model is loaded on first use.
"""

from __future__ import annotations

from .payload import (
    DEFAULT_DIMENSION,
    DeviceIdentity,
    ModelState,
    PayloadOptions,
    build_heartbeat,
    sanitize_agent_version,
)
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
    "build_heartbeat",
    "request_bytes",
    "sanitize_agent_version",
    "split_heartbeat",
    "validate_input",
    "validate_send_heartbeat",
    "validate_shape",
]
