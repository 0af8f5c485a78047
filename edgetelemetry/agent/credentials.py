"""Device credentials from the AWS IoT credentials provider, as a refreshing botocore source.

A device holds an X.509 certificate and its key; over mutual TLS it asks
``GET https://<endpoint>/role-aliases/<alias>/credentials`` (header ``x-amzn-iot-thingname``)
and receives temporary keys, by default valid for an hour.  ``IotCredentialProvider`` is a
botocore ``CredentialProvider``: ``load()`` returns ``RefreshableCredentials`` that fetch again
before they expire, so a ``Sender`` (or any boto3 client) just keeps signing.

The answer's ``Date`` header is a clock we trust (it comes over authenticated TLS), which matters
for devices without an RTC: the expiry is converted into the device's own clock frame from the
server's ``Date`` (``expiration - Date`` seconds from now), so a device whose clock is hours off
still refreshes on time; ``last_server_date`` offers the same clock to the agent.

Errors are ``CredentialsError`` and name the endpoint, the status and the service's message,
never a key, secret or token.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from botocore.credentials import (
    CredentialProvider,
    Credentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)

from .._fs import NotRegularFileError, check_regular_file, mode_bits
from ..errors import EdgeTelemetryError
from . import iot_names

__all__ = [
    "CredentialSettings",
    "CredentialSource",
    "CredentialsError",
    "DEFAULT_LIFETIME_S",
    "IotCredentialProvider",
    "IotCredentials",
    "configured_credentials",
    "split_iot_credentials_url",
]

log = logging.getLogger(__name__)

DEFAULT_LIFETIME_S = 3600.0  # the provider's default; used when an answer has no expiration
METHOD = "custom-iot-credentials-provider"  # botocore: custom providers' names start "custom"
_MAX_ERROR_TEXT = 300


class CredentialsError(EdgeTelemetryError):
    """Credentials could not be obtained; the message says why and never holds a secret."""


@dataclass(frozen=True)
class IotCredentials:
    """One answer of the credentials provider.  ``repr`` hides the secret and the token.

    ``expiration`` is the provider's (server clock); ``local_expiry`` the same instant on our
    clock, derived from the ``Date`` header when there is one.
    """

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    local_expiry: float
    server_date: float | None


def split_iot_credentials_url(url: str) -> tuple[str, str | None]:
    """``https://host/role-aliases/A/credentials`` -> (``https://host``, ``A``); a bare host or
    origin gives ``(endpoint, None)``.  ``CredentialsError`` for any other form."""
    try:
        return iot_names.split_url(url)
    except ValueError as exc:
        raise CredentialsError(str(exc)) from None


class IotCredentialProvider(CredentialProvider):
    """The AWS IoT credentials provider as a botocore credential provider.

    ``endpoint``: the account's credentials endpoint (``<prefix>.credentials.iot.<region>
    .amazonaws.com``), as a host, ``host:port`` or ``https://host[:port]``.  ``ca_file`` verifies
    the endpoint (system trust store when ``None``); ``cert_file``/``key_file`` are the device's
    certificate and key.  ``clock`` is the local clock used for expiry (injectable for tests).
    """

    METHOD = METHOD
    CANONICAL_NAME = "custom-iot"

    def __init__(
        self,
        endpoint: str,
        role_alias: str,
        thing_name: str,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        ca_file: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        origin, alias_in_url = split_iot_credentials_url(endpoint)
        parts = urlsplit(origin)
        if parts.scheme != "https":
            raise CredentialsError(f"IoT credentials endpoint must use https (mutual TLS), "
                                   f"not {parts.scheme!r}")
        if not parts.hostname:
            raise CredentialsError(f"IoT credentials endpoint {endpoint!r} has no host")
        if alias_in_url is not None and alias_in_url != role_alias:
            raise CredentialsError(f"IoT credentials endpoint names role alias "
                                   f"{alias_in_url!r} but role_alias is {role_alias!r}")
        if not iot_names.ROLE_ALIAS.match(role_alias or ""):
            raise CredentialsError(f"role alias {role_alias!r} breaks AWS's rule "
                                   r"[\w=,@-]{1,128}")
        if not iot_names.THING_NAME.match(thing_name or ""):
            raise CredentialsError(f"thing name {thing_name!r} breaks AWS's rule "
                                   "[a-zA-Z0-9:_-]{1,128}")
        if not timeout > 0:
            raise CredentialsError("timeout must be positive")
        self.host: str = parts.hostname
        self.port: int = parts.port or 443
        self.role_alias = role_alias
        self.thing_name = thing_name
        self.cert_file = os.fspath(cert_file)
        self.key_file = os.fspath(key_file)
        self.ca_file = os.fspath(ca_file) if ca_file is not None else None
        self.timeout = float(timeout)
        self._clock = clock
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self.last_server_date: float | None = None
        self.fetches = 0
        _warn_if_key_is_shared(self.key_file)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{host}{port}/role-aliases/{quote(self.role_alias, safe='')}/credentials"

    def __repr__(self) -> str:
        return (f"IotCredentialProvider(url={self.url!r}, thing_name={self.thing_name!r}, "
                f"cert_file={self.cert_file!r})")

    # -- botocore's CredentialProvider interface ----------------------------------------------

    def load(self) -> RefreshableCredentials:
        """Fetch now and return ``RefreshableCredentials`` that fetch again before expiry."""
        first = self.fetch()
        lifetime = max(first.local_expiry - self._clock(), 1.0)
        # botocore refreshes 15 min (advisory) / 10 min (mandatory) before expiry; for the
        # default hour that is fine, for short lifetimes it would refresh on every request.
        advisory = max(1, int(min(15 * 60.0, lifetime / 4)))
        mandatory = max(1, int(min(10 * 60.0, lifetime / 8)))
        return RefreshableCredentials(
            access_key=first.access_key_id,
            secret_key=first.secret_access_key,
            token=first.session_token,
            expiry_time=_utc(first.local_expiry),
            refresh_using=self._refresh_metadata,
            method=METHOD,
            time_fetcher=lambda: _utc(self._clock()),
            advisory_timeout=advisory,
            mandatory_timeout=mandatory,
        )

    def _refresh_metadata(self) -> dict[str, str]:
        creds = self.fetch()
        return {
            "access_key": creds.access_key_id,
            "secret_key": creds.secret_access_key,
            "token": creds.session_token,
            "expiry_time": _utc(creds.local_expiry).isoformat(),
        }

    # -- the request --------------------------------------------------------------------------

    def fetch(self) -> IotCredentials:
        """One ``GET .../credentials`` over mutual TLS; raises ``CredentialsError``."""
        with self._lock:
            context = self._context()
        path = f"/role-aliases/{quote(self.role_alias, safe='')}/credentials"
        conn = http.client.HTTPSConnection(self.host, self.port, context=context,
                                           timeout=self.timeout)
        try:
            conn.request("GET", path, headers={"x-amzn-iot-thingname": self.thing_name,
                                               "Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read(1 << 20)
            received_at = self._clock()
            date_header = resp.getheader("Date")
            status = resp.status
        except ssl.SSLError as exc:
            raise CredentialsError(self._tls_error(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise CredentialsError(
                f"cannot reach the IoT credentials provider at {self.host}:{self.port}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        finally:
            conn.close()
        self.fetches += 1
        server_date = _parse_http_date(date_header)
        if server_date is not None:
            self.last_server_date = server_date
        if status != 200:
            raise CredentialsError(
                f"IoT credentials provider {self.url} refused thing {self.thing_name!r}: "
                f"HTTP {status}{_service_message(body)}"
            )
        return self._parse(body, server_date, received_at)

    def _parse(self, body: bytes, server_date: float | None, received_at: float
               ) -> IotCredentials:
        where = f"IoT credentials provider {self.url}"
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CredentialsError(f"{where} answered 200 with a body that is not JSON "
                                   f"({len(body)} bytes)") from None
        creds = doc.get("credentials") if isinstance(doc, dict) else None
        if not isinstance(creds, dict):
            raise CredentialsError(f'{where} answered 200 without a "credentials" object')
        missing = [k for k in ("accessKeyId", "secretAccessKey", "sessionToken")
                   if not isinstance(creds.get(k), str) or not creds.get(k)]
        if missing:
            raise CredentialsError(f"{where} answered without {', '.join(missing)}")
        expiration_text = creds.get("expiration")
        if expiration_text is None:
            base = server_date if server_date is not None else received_at
            expiration = _utc(base + DEFAULT_LIFETIME_S)
        else:
            try:
                expiration = _parse_iso(str(expiration_text))
            except ValueError:
                raise CredentialsError(f"{where} answered an unreadable expiration "
                                       f"{str(expiration_text)[:40]!r}") from None
        # On our clock: the lifetime the server granted, counted from when the answer came.
        if server_date is not None:
            local_expiry = received_at + (expiration.timestamp() - server_date)
        else:
            local_expiry = expiration.timestamp()
        if local_expiry <= received_at:
            raise CredentialsError(f"{where} answered credentials that are already expired "
                                   f"(expiration {expiration.isoformat()})")
        return IotCredentials(creds["accessKeyId"], creds["secretAccessKey"],
                              creds["sessionToken"], expiration, local_expiry, server_date)

    def _tls_error(self, exc: ssl.SSLError) -> str:
        reason = str(exc.reason or exc)
        where = f"TLS with {self.host}:{self.port} failed ({reason})"
        if isinstance(exc, ssl.SSLCertVerificationError) or "VERIFY_FAILED" in reason:
            return (f"{where}: the endpoint's certificate is not trusted by "
                    f"ca_file {self.ca_file or '(system trust store)'}")
        if "ALERT" in reason:  # the server's verdict on our certificate
            return (f"{where}: the endpoint refused the device certificate {self.cert_file} "
                    "(is it registered, active and attached to the thing?)")
        if isinstance(exc, ssl.SSLEOFError):
            # TLS 1.3 checks the client certificate after the handshake: a server that refuses
            # it may close before its alert is read, and the client sees only the EOF
            return (f"{where}: the endpoint closed the connection, as it does when it refused "
                    f"the device certificate {self.cert_file} (is it registered, active and "
                    "attached to the thing?)")
        return where

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # ssl opens these by name: a FIFO there would block it forever, so refuse anything
            # but a regular file first
            for what, path in (("ca_file", self.ca_file), ("device certificate", self.cert_file),
                               ("device key", self.key_file)):
                try:
                    if path is not None:
                        check_regular_file(path)
                except NotRegularFileError as exc:
                    raise CredentialsError(f"cannot load the {what} {path!r}: "
                                           f"{exc.strerror}") from None
                except OSError:
                    pass  # missing or unreadable: ssl says so below, as before
            try:
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise CredentialsError(f"cannot load ca_file {self.ca_file!r}: "
                                       f"{getattr(exc, 'strerror', None) or exc}") from None
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise CredentialsError(
                    f"cannot load the device certificate {self.cert_file!r} with key "
                    f"{self.key_file!r}: {getattr(exc, 'strerror', None) or exc}"
                ) from None
            self._ssl = ctx
        return self._ssl


class CredentialSettings(Protocol):
    """What ``configured_credentials`` reads (``AgentConfig`` has it all, read-only)."""

    @property
    def credentials_source(self) -> str: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def aws_access_key_id(self) -> str | None: ...
    @property
    def aws_secret_access_key(self) -> str | None: ...
    @property
    def aws_session_token(self) -> str | None: ...
    @property
    def iot_endpoint(self) -> str | None: ...
    @property
    def iot_role_alias(self) -> str | None: ...
    @property
    def iot_thing_name(self) -> str | None: ...
    @property
    def iot_cert_file(self) -> str | None: ...
    @property
    def iot_key_file(self) -> str | None: ...
    @property
    def iot_ca_file(self) -> str | None: ...
    @property
    def iot_timeout_s(self) -> float: ...


def configured_credentials(settings: CredentialSettings) -> Any:
    """What ``Sender(credentials=...)`` takes for a resolved ``credentials_source``: ``None``
    for the default chain, botocore ``Credentials`` for static keys, a resolver for a profile,
    an ``IotCredentialProvider`` for the IoT credentials provider."""
    source = settings.credentials_source
    if source == "iot":
        return IotCredentialProvider(
            str(settings.iot_endpoint), str(settings.iot_role_alias),
            str(settings.iot_thing_name), str(settings.iot_cert_file),
            str(settings.iot_key_file), settings.iot_ca_file, timeout=settings.iot_timeout_s)
    if source == "static":
        return Credentials(str(settings.aws_access_key_id), str(settings.aws_secret_access_key),
                           settings.aws_session_token, method="edgetelemetry-config")
    if source == "profile":
        import botocore.session
        from botocore.credentials import create_credential_resolver

        return create_credential_resolver(botocore.session.Session(profile=settings.profile))
    return None


class CredentialSource:
    """Where the signer gets credentials from, and how a forced refresh reloads them.

    A plain ``Credentials`` object cannot be reloaded; a provider (``load()``), a resolver
    (``load_credentials()``) or the default chain can, and a reload replaces the object whole,
    so a ``RefreshableCredentials`` that the source hands out keeps refreshing itself too.
    """

    def __init__(self, source: Any, loader: Callable[[], Any] | None) -> None:
        self._current = source
        self._loader = loader
        self._lock = threading.Lock()

    @classmethod
    def build(cls, credentials: Any, botocore_session: Any) -> CredentialSource:
        from botocore.credentials import Credentials, create_credential_resolver

        if credentials is None:
            return cls(None, lambda: create_credential_resolver(botocore_session)
                       .load_credentials())
        if isinstance(credentials, Credentials):
            return cls(credentials, None)
        if callable(getattr(credentials, "load_credentials", None)):
            return cls(None, credentials.load_credentials)
        if callable(getattr(credentials, "load", None)):
            return cls(None, credentials.load)
        raise TypeError(
            "credentials must be None (the default chain), a botocore Credentials object, a "
            "credential provider (load()) or a resolver (load_credentials()), not "
            f"{type(credentials).__name__}"
        )

    def frozen(self) -> ReadOnlyCredentials:
        """Current keys (refreshing a RefreshableCredentials when due); raises if none."""
        from botocore.exceptions import NoCredentialsError

        with self._lock:
            if self._current is None and self._loader is not None:
                self._current = self._load()
            current = self._current
        if current is None:
            raise NoCredentialsError()
        frozen: ReadOnlyCredentials = current.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise NoCredentialsError()
        return frozen

    def reload(self) -> bool:
        """Load afresh from the source; False when the source cannot be reloaded."""
        if self._loader is None:
            return False
        with self._lock:
            self._current = self._load()
        return True

    def _load(self) -> Any:
        loaded = self._loader() if self._loader is not None else None
        # botocore's CredentialProvider.load() returns None (or False) for "not found".
        return None if loaded is None or isinstance(loaded, bool) else loaded


def _warn_if_key_is_shared(key_file: str) -> None:
    mode = mode_bits(key_file)  # None: reported when the key is loaded
    if mode is not None and mode & 0o077:
        log.warning("device key %s is accessible by group or others (mode %04o); "
                    "chmod 600 it", key_file, mode)


def _service_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    msg = doc.get("message") if isinstance(doc, dict) else None
    if not isinstance(msg, str) or not msg:
        return ""
    return f" ({msg[:_MAX_ERROR_TEXT]})"


def _parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _parse_iso(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
