"""SigV4 at a timestamp we choose: botocore's signer without its own clock read.

botocore's ``SigV4Auth.add_auth`` takes its timestamp from the host clock with no hook to shift
it; the sender signs at ``clock() + offset`` instead (see ``sender.py``).
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Any

__all__ = ["offset_sigv4_auth"]


def _offset_sigv4_class() -> type:
    from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
    from botocore.exceptions import NoCredentialsError

    class OffsetSigV4Auth(SigV4Auth):
        """SigV4 with a timestamp we choose: botocore's ``add_auth`` minus its clock read.

        Also minus its DEBUG logs: the canonical request lists signed headers, the session
        token among them.
        """

        def __init__(self, credentials: Any, service_name: str, region_name: str,
                     timestamp: float) -> None:
            super().__init__(credentials, service_name, region_name)
            self._epoch = timestamp

        def add_auth(self, request: Any) -> None:
            if self.credentials is None:
                raise NoCredentialsError()
            when = datetime.fromtimestamp(self._epoch, tz=timezone.utc)
            request.context["timestamp"] = when.strftime(SIGV4_TIMESTAMP)
            # The same steps as SigV4Auth.add_auth (its subclasses in botocore reuse these
            # helpers too); test_sender pins them against a real SigV4 verifier.
            self._modify_request_before_signing(request)  # type: ignore[attr-defined]
            canonical = self.canonical_request(request)
            string_to_sign = self.string_to_sign(request, canonical)
            signature = self.signature(string_to_sign, request)
            self._inject_signature_to_request(request, signature)  # type: ignore[attr-defined]

    return OffsetSigV4Auth


@functools.cache
def _auth_class() -> type:
    # built on first use, so importing this module imports no botocore
    return _offset_sigv4_class()


def offset_sigv4_auth(credentials: Any, service_name: str, region_name: str,
                      timestamp: float) -> Any:
    """A botocore SigV4 signer that signs at ``timestamp`` (epoch seconds)."""
    return _auth_class()(credentials, service_name, region_name, timestamp)
