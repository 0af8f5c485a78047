"""A self-hosted SageMaker Edge Manager data-plane endpoint (``edgetelemetry serve``).

AWS discontinued the hosted service in April 2024; devices keep their boto3 ``sagemaker-edge``
clients and point ``endpoint_url`` here.  See ``docs/endpoint.md``.

Importing this package does no work: botocore's model is loaded when a server starts.
"""

from __future__ import annotations

from .app import DEFAULT_CACHE_TTL, DEFAULT_MAX_BODY, EndpointApp
from .cli import main, register_main
from .endpoint import EndpointServer
from .errors import STATUS, CredentialsFileError, RegistrationError, ServiceError
from .sigv4 import (
    MAX_SKEW_SECONDS,
    Credential,
    load_credentials_file,
    normalize_credentials,
)
from .store import (
    SCHEMA_VERSION,
    DeploymentResultInfo,
    DeviceInfo,
    DeviceRefused,
    FleetStore,
    MetricPoint,
    ModelInfo,
    Store,
    StoreError,
    apply_registry,
)

__all__ = [
    "DEFAULT_CACHE_TTL",
    "DEFAULT_MAX_BODY",
    "MAX_SKEW_SECONDS",
    "SCHEMA_VERSION",
    "STATUS",
    "Credential",
    "CredentialsFileError",
    "DeploymentResultInfo",
    "DeviceInfo",
    "DeviceRefused",
    "EndpointApp",
    "EndpointServer",
    "FleetStore",
    "MetricPoint",
    "ModelInfo",
    "RegistrationError",
    "ServiceError",
    "Store",
    "StoreError",
    "apply_registry",
    "load_credentials_file",
    "main",
    "normalize_credentials",
    "register_main",
]
