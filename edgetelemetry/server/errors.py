"""Errors of the endpoint: the AWS-style ones it answers with, and the ones its Python API raises.

A ``ServiceError`` is an answer, not a crash: the request handler turns it into a response with the
code in the ``x-amzn-ErrorType`` header and ``{"message": ...}`` as the JSON body, which is what
botocore's rest-json parser reads (``ClientError.response["Error"]["Code"]``).  Each code has one
HTTP status, in ``STATUS``; clients choose to retry on the code, so the codes are AWS's own.
"""

from __future__ import annotations

from typing import Final

from ..errors import EdgeTelemetryError

__all__ = [
    "STATUS",
    "CredentialsFileError",
    "RegistrationError",
    "ServiceError",
]

# code -> HTTP status.  The AWS common errors (https://docs.aws.amazon.com/ - "Common Errors"),
# the modelled InternalServiceException, and the protocol-level ones this server needs.
STATUS: Final[dict[str, int]] = {
    # request content
    "ValidationException": 400,
    "SerializationException": 400,
    "LengthRequiredException": 411,
    "RequestEntityTooLargeException": 413,
    "UnknownOperationException": 404,
    # authentication and authorisation
    "MissingAuthenticationTokenException": 403,
    "IncompleteSignatureException": 400,
    "InvalidSignatureException": 403,
    "UnrecognizedClientException": 403,
    "AccessDeniedException": 403,
    # load and faults
    "ThrottlingException": 429,
    "ServiceUnavailable": 503,
    "InternalServiceException": 500,
}


class ServiceError(EdgeTelemetryError):
    """An AWS-style error answer: ``code`` (a key of ``STATUS``), HTTP ``status``, ``message``."""

    def __init__(self, code: str, message: str) -> None:
        if code not in STATUS:
            raise ValueError(f"unknown service error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = STATUS[code]
        self.message = message


class RegistrationError(EdgeTelemetryError, ValueError):
    """A registration or deployment call of the Python API that cannot be applied as given."""


class CredentialsFileError(EdgeTelemetryError):
    """The credentials file is missing, unreadable, readable by others, or not the documented JSON.

    The message never contains a secret.
    """
