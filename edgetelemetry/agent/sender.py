"""Send Edge Manager requests with boto3, retrying and classifying failures ourselves.

One ``sagemaker-edge`` client per ``Sender``, with botocore's own retries off: every attempt is
ours, so each failure is classified (``Outcome``), counted (``stats()``) and backed off with full
jitter.  ``send`` never raises for a service or network failure; it returns a ``SendResult`` and
the caller decides (keep the payload in the spool, or dead-letter it on ``FATAL``).

Signing: the client is built with ``signature_version=UNSIGNED`` and this module signs every
request itself in a ``before-sign`` handler, with a ``SigV4Auth`` subclass whose timestamp is
``clock() + clock_offset_s``.  botocore's ``SigV4Auth.add_auth`` takes its timestamp from
``botocore.utils.get_current_datetime()`` (the host clock) with no hook to shift it, so a device
whose clock is wrong by more than 15 minutes could never sign a request the service accepts.  When
the service answers ``InvalidSignatureException: Signature expired`` (or another skew error), the
offset is computed from the answer's ``Date`` header and applied to every later request.  Signing
ourselves also lets a forced credential refresh take effect without rebuilding the client.

Outcomes (``stats()`` key per failed attempt in brackets):

==================== =============================================================== ==========
outcome              failures                                                        in ``send``
==================== =============================================================== ==========
RETRY                ThrottlingException & co., HTTP 429 [failures_throttled];       backoff,
                     InternalServiceException, InternalFailure, ServiceUnavailable,  retry
                     any 5xx [failures_5xx]; connect/read timeouts, 408
                     [failures_timeout]; refused, reset, closed, DNS, TLS
                     [failures_connection]; unparseable answers [failures_other]
REFRESH_CREDENTIALS  AccessDenied, UnrecognizedClient, ExpiredToken,                 reload keys,
                     InvalidClientTokenId, MissingAuthenticationToken,               retry once
                     IncompleteSignature, a bad signature with a sane Date, other
                     401/403 [failures_auth]; keys that cannot be loaded
                     [failures_credentials: nothing is sent, no retry]
CLOCK_SKEW           InvalidSignatureException "Signature expired"/"not yet          fix offset,
                     current", RequestTimeTooSkewed & co., a bad signature whose     retry once
                     Date is > 5 min from our clock [failures_clock_skew]
FATAL                ValidationException, SerializationException, boto3's           return
                     ParamValidationError [failures_validation]; any other 4xx
                     [failures_other]
==================== =============================================================== ==========
"""

from __future__ import annotations

import enum
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from ..errors import EdgeTelemetryError
from ..heartbeat.service import SERVICE_NAME, SIGNING_NAME
from .clock import SigningOffset
from .redact import REDACT, install_log_redaction
from .signing import offset_sigv4_auth

if TYPE_CHECKING:  # botocore is imported when a Sender is built, not when this module is
    from .config import AgentConfig

__all__ = [
    "Outcome",
    "SendResult",
    "Sender",
    "full_jitter",
    "server_date",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3
# A Date header further than this from our (corrected) clock makes an ambiguous signature
# error a clock problem.  The service's window is 15 min; 5 min leaves margin on both sides.
SKEW_SUSPECT_S = 300.0

_THROTTLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "BandwidthLimitExceeded",
    "ProvisionedThroughputExceededException", "RequestThrottled", "LimitExceededException",
    "EC2ThrottledException", "PriorRequestNotComplete", "TransactionInProgressException",
})
_SERVER_CODES = frozenset({
    "InternalServiceException", "InternalFailure", "InternalError", "InternalServerError",
    "InternalServerException", "ServiceUnavailable", "ServiceUnavailableException",
})
_TIMEOUT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException"})
_AUTH_CODES = frozenset({
    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
    "ExpiredTokenException", "ExpiredToken", "InvalidClientTokenId", "InvalidToken",
    "MissingAuthenticationTokenException", "IncompleteSignatureException", "AuthFailure",
    "NotAuthorized",
})
_SIGNATURE_CODES = frozenset({"InvalidSignatureException", "SignatureDoesNotMatch",
                              "AuthFailure"})
_SKEW_CODES = frozenset({"RequestTimeTooSkewed", "RequestExpired", "RequestInTheFuture"})
_SKEW_PHRASES = ("signature expired", "signature not yet current", "time too skewed",
                 "request has expired", "signature has expired")
_VALIDATION_CODES = frozenset({"ValidationException", "ValidationError",
                               "SerializationException", "InvalidParameterException",
                               "InvalidParameterValueException"})
# "(20240101T001500Z - 15 min.)": AWS's skew messages name the server's time in parentheses.
_SERVER_TIME_IN_MESSAGE = re.compile(r"\((\d{8}T\d{6}Z) [-+] ")
_MAX_MESSAGE = 500

_STAT_KEYS = (
    "sends", "attempts", "successes",
    "failures_throttled", "failures_5xx", "failures_timeout", "failures_connection",
    "failures_validation", "failures_auth", "failures_clock_skew", "failures_credentials",
    "failures_other",
    "retries", "clock_corrections", "credential_refreshes",
)


class Outcome(enum.Enum):
    """What a send came to, and so what the caller does with the payload."""

    OK = "ok"  # delivered: ack it
    RETRY = "retry"  # transient (throttling, 5xx, network): keep it, try after retry_after_s
    REFRESH_CREDENTIALS = "refresh_credentials"  # refused even after a refresh: keep it
    CLOCK_SKEW = "clock_skew"  # refused for time even after a correction: keep it
    FATAL = "fatal"  # this payload will never be accepted: dead-letter it


@dataclass(frozen=True)
class SendResult:
    """The end of one ``send``: the last attempt's outcome and what the caller needs to act.

    ``retry_after_s`` is set for outcomes worth another try (all but ``OK`` and ``FATAL``): the
    server's ``Retry-After`` when it gave one, else the next full-jitter backoff.
    ``server_time`` is the last answer's ``Date`` header (epoch s), ``http_status`` its status.
    ``message`` is the server's (or the network error's) text with credentials removed.
    """

    outcome: Outcome
    attempts: int
    error_code: str | None = None
    message: str | None = None
    retry_after_s: float | None = None
    http_status: int | None = None
    server_time: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True)
class _Attempt:
    """One failed attempt, classified."""

    outcome: Outcome
    stat: str
    code: str
    message: str
    http_status: int | None = None
    server_time: float | None = None
    received_at: float | None = None  # our clock when the answer came
    retry_after_s: float | None = None


def full_jitter(rng: random.Random, retry: int, base: float, cap: float) -> float:
    """AWS's "full jitter": ``rng.uniform(0, min(cap, base * 2**retry))``, retry = 0, 1, ...

    Spreads a fleet's retries over the whole window, so devices that failed together (an
    endpoint restart) do not come back together.
    """
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(retry, 64)))


def server_date(response: Mapping[str, Any] | Any) -> float | None:
    """The ``Date`` header of a boto3 response as epoch seconds, or ``None``.

    Accepts a boto3 response dict, a ``ClientError`` (or its ``.response``), or a mapping of
    header names to values.  The endpoint's clock is the trusted one for devices without an RTC.
    """
    headers = _headers_of(response)
    for name, value in headers.items():
        if str(name).lower() == "date":
            return _parse_http_date(str(value))
    return None


def _headers_of(response: Any) -> Mapping[str, Any]:
    if hasattr(response, "response") and isinstance(response.response, Mapping):
        response = response.response  # a ClientError
    if not isinstance(response, Mapping):
        return {}
    meta = response.get("ResponseMetadata")
    if isinstance(meta, Mapping):
        hdrs = meta.get("HTTPHeaders")
        return hdrs if isinstance(hdrs, Mapping) else {}
    return response


def _parse_http_date(value: str) -> float | None:
    try:
        parsed: datetime | None = parsedate_to_datetime(value)  # None on Python < 3.10
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # RFC 7231 dates are GMT
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        when = _parse_http_date(value)
        return None if when is None else max(0.0, when - time.time())
    return seconds if seconds >= 0 else None


class Sender:
    """Send ``SendHeartbeat`` requests to ``endpoint_url`` with our retries and signing clock.

    ``credentials``: ``None`` for boto3's standard chain, a botocore ``Credentials`` (static or
    refreshable), a credential provider with ``load()`` (e.g. ``IotCredentialProvider``) or a
    resolver with ``load_credentials()``.  ``max_attempts`` bounds the requests one ``send``
    makes, corrections included.  ``rng``, ``clock`` and ``sleep`` are injectable for tests;
    ``clock`` is also the signing clock (plus ``clock_offset_s``).  ``verify`` is passed to
    boto3 (``False`` or a CA bundle path for a self-hosted endpoint with a private CA).
    Thread-safe: concurrent ``send`` calls run one at a time.
    """

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        *,
        credentials: Any = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        verify: bool | str | None = None,
        clock_offset_s: float = 0.0,
        offset: SigningOffset | None = None,
    ) -> None:
        if not endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url must start with http:// or https://: {endpoint_url!r}")
        if not region:
            raise ValueError("region must not be empty")
        if not (connect_timeout > 0 and read_timeout > 0):
            raise ValueError("connect_timeout and read_timeout must be positive")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) \
                or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, not {max_attempts!r}")
        if not (backoff_base >= 0 and backoff_cap >= backoff_base):
            raise ValueError("backoff_base must be >= 0 and backoff_cap >= backoff_base")

        import boto3.session
        import botocore
        import botocore.config
        import botocore.session

        from .credentials import CredentialSource

        self.endpoint_url = endpoint_url
        self.region = region
        self.max_attempts = max_attempts
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._sleep = sleep
        self._offset = offset if offset is not None else SigningOffset(clock_offset_s)
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._last_server_time: float | None = None
        self._last_status: int | None = None

        core_session = botocore.session.get_session()
        session = boto3.session.Session(region_name=region, botocore_session=core_session)
        self._creds = CredentialSource.build(credentials, core_session)
        config = botocore.config.Config(
            signature_version=botocore.UNSIGNED,  # we sign in _sign (clock offset, refresh)
            retries={"mode": "standard", "total_max_attempts": 1},  # our loop retries
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._client = session.client("sagemaker-edge", endpoint_url=endpoint_url,
                                      region_name=region, config=config, verify=verify)
        # Last, so any other before-sign handler has finished mutating the request.
        self._client.meta.events.register_last(f"before-sign.{SERVICE_NAME}", self._sign)
        install_log_redaction()

    @classmethod
    def from_config(cls, config: AgentConfig, **overrides: Any) -> Sender:
        """A Sender with ``config``'s endpoint, region, timeouts, retry and credential settings."""
        kwargs = config.sender_kwargs()
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- public API ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The underlying boto3 client (signed by this Sender; no retries of its own)."""
        return self._client

    @property
    def clock_offset_s(self) -> float:
        """Seconds added to ``clock()`` when signing: server time minus our time."""
        return self._offset.get()

    @property
    def signing_offset(self) -> SigningOffset:
        """The offset object itself, to share with the one that keeps the trusted time."""
        return self._offset

    def set_clock_offset(self, offset_s: float) -> None:
        """Sign later requests at ``clock() + offset_s`` (e.g. from a trusted ``Date``)."""
        self._offset.set(offset_s)

    def now(self) -> float:
        """Our best idea of the server's time: ``clock() + clock_offset_s``."""
        return self._clock() + self.clock_offset_s

    def refresh_credentials(self) -> bool:
        """Reload credentials from their source now; False when the source is static."""
        if not self._creds.reload():
            return False
        self._bump("credential_refreshes")
        log.info("credentials reloaded from their source")
        return True

    def stats(self) -> dict[str, int | float]:
        """Counters since construction (ints) and the current ``clock_offset_s`` (float)."""
        with self._state_lock:
            out: dict[str, int | float] = dict(self._stats)
        out["clock_offset_s"] = self._offset.get()
        return out

    def send(self, params: Mapping[str, Any]) -> SendResult:
        """``SendHeartbeat(**params)`` with retries; never raises for service or network errors.

        RETRY failures back off ``rng.uniform(0, min(cap, base * 2**n))`` (full jitter, n = 0
        for the first retry) and honour a longer ``Retry-After``.  An auth failure reloads the
        credentials and retries at once, once; a clock-skew failure corrects the signing clock
        from the answer's ``Date`` and retries at once, once.  ``FATAL`` never retries.
        """
        with self._send_lock:
            return self._send(dict(params))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Sender(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
                f"max_attempts={self.max_attempts}, clock_offset_s={self.clock_offset_s:g})")

    # -- the retry loop -----------------------------------------------------------------------

    def _send(self, params: dict[str, Any]) -> SendResult:
        self._bump("sends")
        attempts = 0
        retries = 0  # backoff exponent: retries after RETRY failures so far
        refreshed = corrected = False
        while True:
            failure = self._credentials_problem()
            if failure is None:
                attempts += 1
                self._bump("attempts")
                failure = self._attempt(params)
                if failure is None:
                    self._bump("successes")
                    return SendResult(Outcome.OK, attempts, http_status=self._last_status,
                                      server_time=self._last_server_time)
            self._bump(failure.stat)
            log.debug("SendHeartbeat attempt %d: %s (%s)", attempts, failure.outcome.value,
                      failure.code)
            if failure.outcome is Outcome.FATAL:
                return self._result(failure, attempts, None)
            if failure.stat == "failures_credentials":
                # The request never went out: credentials could not be loaded.  Not worth a
                # tight loop here; the caller tries again after the backoff.
                return self._result(failure, attempts, self._backoff(retries))
            budget_left = attempts < self.max_attempts
            if failure.outcome is Outcome.REFRESH_CREDENTIALS:
                # Refresh even when out of attempts: the next send gets the new keys.
                reloaded = False
                if not refreshed:
                    reloaded, failure = self._try_refresh(failure)
                if not reloaded or not budget_left:
                    return self._result(failure, attempts, self._backoff(retries))
                refreshed = True
                continue
            if failure.outcome is Outcome.CLOCK_SKEW:
                corrected_now = self._correct_clock(failure)
                if corrected or not corrected_now or not budget_left:
                    return self._result(failure, attempts, self._backoff(retries))
                corrected = True
                continue
            # RETRY
            delay = self._backoff(retries)
            if failure.retry_after_s is not None:
                delay = min(self.backoff_cap, max(delay, failure.retry_after_s))
            if not budget_left:
                return self._result(failure, attempts, delay)
            retries += 1
            self._bump("retries")
            self._sleep(delay)

    def _result(self, failure: _Attempt, attempts: int, retry_after: float | None) -> SendResult:
        return SendResult(failure.outcome, attempts, failure.code, failure.message,
                          retry_after, failure.http_status, failure.server_time)

    def _backoff(self, n: int) -> float:
        return full_jitter(self._rng, n, self.backoff_base, self.backoff_cap)

    def _credentials_problem(self) -> _Attempt | None:
        from botocore.exceptions import BotoCoreError

        try:
            self._creds.frozen()
        except (BotoCoreError, EdgeTelemetryError, OSError, RuntimeError) as exc:
            # RuntimeError: botocore's "refreshed credentials are still expired".
            return _Attempt(Outcome.REFRESH_CREDENTIALS, "failures_credentials",
                            "CredentialsUnavailable", self._clean(str(exc)))
        return None

    def _try_refresh(self, failure: _Attempt) -> tuple[bool, _Attempt]:
        """Reload the credentials; the failure comes back with the reload's own error in its
        message when that failed (the caller logs it, once: see ``agent/faults.py``)."""
        try:
            reloaded = self.refresh_credentials()
        except Exception as exc:  # the source failed: report the auth error with the reason
            reason = self._clean(str(exc))
            log.debug("credential refresh after %s failed: %s", failure.code, reason)
            return False, replace(failure, message=f"{failure.message} (reloading the "
                                                   f"credentials failed too: {reason})")
        if not reloaded:
            log.debug("%s and the credentials are static: nothing to refresh", failure.code)
        return reloaded, failure

    def _correct_clock(self, failure: _Attempt) -> bool:
        if failure.server_time is None or failure.received_at is None:
            log.warning("clock skew reported (%s) without a usable server time; cannot correct",
                        failure.code)
            return False
        offset = failure.server_time - failure.received_at
        old = self._offset.set(offset)
        self._bump("clock_corrections")
        log.info("signing clock corrected from the server's Date: offset %+.0f s (was %+.0f s)",
                 offset, old)
        return True

    def _attempt(self, params: dict[str, Any]) -> _Attempt | None:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            HTTPClientError,
            ParamValidationError,
            ReadTimeoutError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        self._last_server_time = None
        try:
            response = self._client.send_heartbeat(**params)
        except ClientError as exc:
            return self._classify_client_error(exc)
        except ParamValidationError as exc:
            return _Attempt(Outcome.FATAL, "failures_validation", "ParamValidationError",
                            self._clean(str(exc)))
        except (ReadTimeoutError, ConnectTimeoutError) as exc:
            return _Attempt(Outcome.RETRY, "failures_timeout", type(exc).__name__,
                            self._clean(str(exc)))
        except (BotoConnectionError, HTTPClientError) as exc:
            # Refused, reset, closed without an answer, DNS, TLS, proxy.
            return _Attempt(Outcome.RETRY, "failures_connection", type(exc).__name__,
                            self._clean(str(exc)))
        except (BotoCoreError, EdgeTelemetryError) as exc:
            # Credentials failing mid-request, or an unparseable answer: transient as far as
            # we can tell, and never the payload's fault.
            stat = ("failures_credentials" if _is_credentials_error(exc) else "failures_other")
            outcome = Outcome.REFRESH_CREDENTIALS if stat == "failures_credentials" \
                else Outcome.RETRY
            return _Attempt(outcome, stat, type(exc).__name__, self._clean(str(exc)))
        self._last_server_time = server_date(response)
        self._last_status = response["ResponseMetadata"].get("HTTPStatusCode")
        return None

    def _classify_client_error(self, exc: Any) -> _Attempt:
        received_at = self._clock()
        response = exc.response or {}
        err = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        headers = {str(k).lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()}
        status = meta.get("HTTPStatusCode")
        code = str(err.get("Code") or "") or f"HTTP{status}"
        message = self._clean(str(err.get("Message") or ""))
        when = _parse_http_date(headers["date"]) if "date" in headers else None
        self._last_server_time = when
        retry_after = _parse_retry_after(headers.get("retry-after"))

        def make(outcome: Outcome, stat: str, server_time: float | None = when) -> _Attempt:
            return _Attempt(outcome, stat, code, message, status, server_time, received_at,
                            retry_after)

        lowered = message.lower()
        if code in _SKEW_CODES or (code in _SIGNATURE_CODES
                                   and any(p in lowered for p in _SKEW_PHRASES)):
            return make(Outcome.CLOCK_SKEW, "failures_clock_skew",
                        when if when is not None else _server_time_from_message(message))
        if code in _SIGNATURE_CODES:
            # A bad signature is a wrong secret, unless our clock is far from the server's.
            if when is not None and abs(when - (received_at + self.clock_offset_s)) \
                    > SKEW_SUSPECT_S:
                return make(Outcome.CLOCK_SKEW, "failures_clock_skew")
            return make(Outcome.REFRESH_CREDENTIALS, "failures_auth")
        if code in _AUTH_CODES:
            return make(Outcome.REFRESH_CREDENTIALS, "failures_auth")
        if code in _THROTTLE_CODES or status == 429:
            return make(Outcome.RETRY, "failures_throttled")
        if code in _TIMEOUT_CODES or status == 408:
            return make(Outcome.RETRY, "failures_timeout")
        if code in _SERVER_CODES or (isinstance(status, int) and status >= 500):
            return make(Outcome.RETRY, "failures_5xx")
        if code in _VALIDATION_CODES:
            return make(Outcome.FATAL, "failures_validation")
        if status in (401, 403):
            return make(Outcome.REFRESH_CREDENTIALS, "failures_auth")
        return make(Outcome.FATAL, "failures_other")

    # -- signing ------------------------------------------------------------------------------

    def _sign(self, request: Any, signing_name: str | None = None,
              region_name: str | None = None, **_: Any) -> None:
        """``before-sign`` handler: SigV4 at ``clock() + offset`` with the current keys."""
        frozen = self._creds.frozen()
        REDACT.remember(frozen.access_key, frozen.secret_key, frozen.token)
        auth = offset_sigv4_auth(frozen, signing_name or SIGNING_NAME,
                                region_name or self.region, self.now())
        auth.add_auth(request)

    @staticmethod
    def _clean(text: str) -> str:
        """Messages may echo request headers or keys: mask every key we signed with."""
        text = REDACT.redact(text)
        return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."

    def _bump(self, key: str, n: int = 1) -> None:
        with self._state_lock:
            self._stats[key] += n


def _server_time_from_message(message: str) -> float | None:
    m = _SERVER_TIME_IN_MESSAGE.search(message)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc).timestamp()


def _is_credentials_error(exc: BaseException) -> bool:
    from botocore.exceptions import (
        CredentialRetrievalError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    return isinstance(exc, (NoCredentialsError, PartialCredentialsError,
                            CredentialRetrievalError, EdgeTelemetryError))


