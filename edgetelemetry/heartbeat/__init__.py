"""Snapshots to Edge Manager ``SendHeartbeat`` requests: build and validate.

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
from .validate import (
    MIN_TIMESTAMP,
    HeartbeatValidationError,
    validate_input,
    validate_send_heartbeat,
)

__all__ = [
    "DEFAULT_DIMENSION",
    "MIN_TIMESTAMP",
    "DeviceIdentity",
    "HeartbeatValidationError",
    "ModelState",
    "PayloadOptions",
    "build_heartbeat",
    "sanitize_agent_version",
    "validate_input",
    "validate_send_heartbeat",
]
