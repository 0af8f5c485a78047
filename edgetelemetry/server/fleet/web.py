"""The fleet page served by the endpoint: ``GET /fleet`` and its JSON under ``/fleet/api/``.

The page (``static/fleet.html``, ``fleet.css``, ``fleet.js``) is self-contained: no CDN, no
external font, no inline script (the Content-Security-Policy allows only this origin).  The script
fetches the JSON below and draws each model's latency percentiles as inline SVG.

=====================================  ==========================================================
``GET /fleet``                         the page (query ``hours``, ``fleet``, ``device``, ``limit``,
                                       ``refresh`` are read by its script)
``GET /fleet/static/<file>``           ``fleet.js``, ``fleet.css``
``GET /fleet/api/status``              ``fleet.fleet_status(...).to_json()``; query
                                       ``offline_after``, ``fleet``, ``device``
``GET /fleet/api/series?device=D``     ``{"device", "since", "until", "series": [...]}`` with
                                       ``LatencySeries.to_json()``; query ``hours`` (6) or
                                       ``since``/``until`` (epoch seconds), ``max_points``
``GET /fleet/device?device=D``         the per-device page (the same files; the script reads
                                       the path)
``GET /fleet/api/status?limit=N``      one page of devices (``device_view.device_page``):
                                       ``offset``, ``limit``, ``q`` (part of a name), ``state``
``GET /fleet/api/device?device=D``     ``{"status", "agent", "deployments", "alerts"}``: the
                                       device's status, agent metrics, deployment results
``GET /fleet/api/metrics?device=D``    ``{"tracks": [MetricTrack.to_json()]}``: every metric of
                                       its models, points with their version; time as series
``GET /fleet/api/alerts``              ``{"enabled", "firing": [Alert.to_json()]}``
=====================================  ==========================================================

Access (the page is read-only: GET and HEAD only, nothing it serves changes state):

- without viewer credentials, only loopback clients are answered (peer address in 127.0.0.0/8 or
  ``::1``) and only under a loopback ``Host`` name (``localhost``, ``127.x.y.z``, ``[::1]``), which
  also defeats DNS rebinding.  Reach it from elsewhere over ``ssh -L``.
- with viewer credentials (``{user: password}``), every request needs HTTP Basic auth with one of
  them, whatever its address; compared in constant time.  Basic auth sends the password in clear:
  use TLS in front of the endpoint whenever the network is not trusted.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from ..store import FleetStore, StoreError
from .device_view import device_metrics, device_page
from .queries import DEFAULT_OFFLINE_AFTER, fleet_status, latency_series

if TYPE_CHECKING:
    from ..alerts import Alert

__all__ = ["DEFAULT_SERIES_HOURS", "FleetPage", "WebAnswer"]

logger = logging.getLogger(__name__)

DEFAULT_SERIES_HOURS = 6.0
_MAX_POINTS = 2000
_MAX_PAGE = 500
_STATIC = {
    "fleet.html": "text/html; charset=utf-8",
    "fleet.js": "text/javascript; charset=utf-8",
    "fleet.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    (
        "Content-Security-Policy",
        (
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


class Headers(Protocol):
    """What is read of request headers: ``http.client.HTTPMessage`` and ``dict`` both fit."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True)
class WebAnswer:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())


@functools.cache
def _static(name: str) -> bytes:
    static = resources.files("edgetelemetry.server.fleet").joinpath("static")
    return static.joinpath(name).read_bytes()


def _json(status: int, document: Any, *headers: tuple[str, str]) -> WebAnswer:
    body = json.dumps(document, allow_nan=False).encode("utf-8")
    return WebAnswer(status, "application/json", body, tuple(headers))


def _error(status: int, message: str, *headers: tuple[str, str]) -> WebAnswer:
    return _json(status, {"message": message}, *headers)


class _BadQuery(ValueError):
    pass


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise _BadQuery(f"{name} is given more than once")
    return values[0]


def _number(query: Mapping[str, list[str]], name: str, default: float | None) -> float | None:
    text = _one(query, name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise _BadQuery(f"{name} must be a number") from None
    if not math.isfinite(value):
        raise _BadQuery(f"{name} must be finite")
    return value


def is_loopback_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class FleetPage:
    """Answers the ``/fleet`` routes from a ``Store``; plugged into ``EndpointServer``.

    ``viewers``: ``{user: password}`` for HTTP Basic auth; ``None`` answers loopback clients only.
    ``offline_after`` is the default recency window of the status (a query may override it).
    """

    def __init__(
        self,
        store: FleetStore,
        clock: Callable[[], float] = time.time,
        *,
        viewers: Mapping[str, str] | None = None,
        offline_after: float = DEFAULT_OFFLINE_AFTER,
    ) -> None:
        if viewers is not None and (
            not viewers or not all(isinstance(v, str) and v for v in viewers.values())
        ):
            raise ValueError("viewers must map at least one user to a non-empty password")
        if not (offline_after > 0 and math.isfinite(offline_after)):
            raise ValueError("offline_after must be a positive number of seconds")
        self.store = store
        self.clock = clock
        self.offline_after = offline_after
        # the alerts firing now (``AlertEvaluator.firing``), when the endpoint evaluates any
        self.alerts: Callable[[], list[Alert]] | None = None
        self._viewers = (
            {user.encode(): password.encode() for user, password in viewers.items()}
            if viewers is not None
            else None
        )

    @staticmethod
    def handles(path: str) -> bool:
        """Whether a request target is one of the page's (``/fleet`` or below)."""
        route = path.split("?", 1)[0]
        return route == "/fleet" or route.startswith("/fleet/")

    # -- access ------------------------------------------------------------------------------

    def refusal(self, headers: Headers, client_host: str) -> WebAnswer | None:
        """None when the request may read the page, else the answer refusing it (``/metrics``
        shares this rule when it has no token)."""
        if self._viewers is None:
            if not is_loopback_address(client_host):
                return _error(
                    403,
                    "The fleet page answers loopback clients only; connect through an SSH tunnel "
                    "or configure fleet viewer credentials.",
                )
            name = _host_name(headers.get("Host") or "")
            if not (
                name in _LOOPBACK_NAMES or name.endswith(".localhost") or is_loopback_address(name)
            ):
                return _error(403, "The fleet page answers under a loopback host name only.")
            return None
        challenge = ("WWW-Authenticate", 'Basic realm="edgetelemetry fleet", charset="UTF-8"')
        scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return _error(401, "Fleet viewer credentials are required.", challenge)
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return _error(401, "Malformed Basic credentials.", challenge)
        expected = self._viewers.get(user)
        # compare against something even for an unknown user, so timing does not tell users apart
        ok = hmac.compare_digest(password, expected if expected is not None else b"\0" * 32)
        if not (sep and expected is not None and ok):
            return _error(401, "Fleet viewer credentials are not valid.", challenge)
        return None

    # -- routes ------------------------------------------------------------------------------

    def respond(self, method: str, target: str, headers: Headers, client_host: str) -> WebAnswer:
        """The answer to one request from ``client_host`` (the peer address)."""
        answer = self._respond(method, target, headers, client_host)
        return WebAnswer(
            answer.status, answer.content_type, answer.body, answer.headers + _SECURITY_HEADERS
        )

    def _respond(self, method: str, target: str, headers: Headers, client_host: str) -> WebAnswer:
        refusal = self.refusal(headers, client_host)
        if refusal is not None:
            return refusal
        if method not in ("GET", "HEAD"):
            return _error(405, "The fleet page is read-only: GET or HEAD.", ("Allow", "GET, HEAD"))
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            if path in ("/fleet", "/fleet/", "/fleet/device"):
                return WebAnswer(200, _STATIC["fleet.html"], _static("fleet.html"))
            if path.startswith("/fleet/static/"):
                name = path[len("/fleet/static/") :]
                if name in _STATIC:
                    return WebAnswer(200, _STATIC[name], _static(name))
            elif path == "/fleet/api/status":
                return self._status(query)
            elif path == "/fleet/api/series":
                return self._series(query)
            elif path == "/fleet/api/device":
                return self._device(query)
            elif path == "/fleet/api/metrics":
                return self._metrics(query)
            elif path == "/fleet/api/alerts":
                alerts = self.alerts() if self.alerts is not None else []
                return _json(200, {"enabled": self.alerts is not None,
                                   "firing": [a.to_json() for a in alerts]})
        except _BadQuery as exc:
            return _error(400, str(exc))
        except StoreError as exc:
            logger.warning("fleet page: %s", exc)
            return _error(503, "The store is not available.")
        return _error(404, f"Nothing at {path[:100]}.")

    def _status(self, query: Mapping[str, list[str]]) -> WebAnswer:
        offline_after = _number(query, "offline_after", self.offline_after)
        assert offline_after is not None
        if offline_after <= 0:
            raise _BadQuery("offline_after must be positive")
        if any(_one(query, k) for k in ("offset", "limit", "q", "state")):
            offset = _number(query, "offset", 0)
            limit = _number(query, "limit", _MAX_PAGE)
            assert offset is not None and limit is not None
            if offset < 0 or not 1 <= limit <= _MAX_PAGE:
                raise _BadQuery(f"offset must be 0 or more and limit 1..{_MAX_PAGE}")
            try:
                page = device_page(
                    self.store, now=self.clock(), offset=int(offset), limit=int(limit),
                    offline_after=offline_after, fleet=_one(query, "fleet") or None,
                    device=_one(query, "device") or None, search=_one(query, "q") or "",
                    state=_one(query, "state") or "",
                )
            except ValueError as exc:
                raise _BadQuery(str(exc)) from None
            return _json(200, page)
        status = fleet_status(
            self.store,
            now=self.clock(),
            offline_after=offline_after,
            fleet=_one(query, "fleet") or None,
            device=_one(query, "device") or None,
        )
        return _json(200, status.to_json())

    def _series(self, query: Mapping[str, list[str]]) -> WebAnswer:
        device = _device_of(query)
        now, since, until = self._range(query)
        series = latency_series(
            self.store, device, since=since, until=until, max_points=_max_points(query)
        )
        return _json(
            200,
            {
                "device": device,
                "generated_at": now,
                "since": since,
                "until": until,
                "series": [s.to_json() for s in series],
            },
        )

    def _range(self, query: Mapping[str, list[str]]) -> tuple[float, float, float | None]:
        now = self.clock()
        hours = _number(query, "hours", DEFAULT_SERIES_HOURS)
        assert hours is not None
        if hours <= 0:
            raise _BadQuery("hours must be positive")
        since = _number(query, "since", now - hours * 3600)
        assert since is not None
        return now, since, _number(query, "until", None)

    def _device(self, query: Mapping[str, list[str]]) -> WebAnswer:
        device = _device_of(query)
        now = self.clock()
        status = device_page(self.store, now=now, offline_after=self.offline_after,
                             device=device, limit=1)
        if not status["devices"]:
            return _error(404, "No such device.")
        agent = {p.metric: p.value for p in self.store.latest_agent_points(device=device)}
        deployments = [
            {"received_at": r.received_at, "name": r.deployment_name,
             "status": r.deployment_status, "message": r.status_message,
             "start_time": r.start_time, "end_time": r.end_time, "models": r.models}
            for r in self.store.deployment_results(device, 20)
        ]
        alerts = self.alerts() if self.alerts is not None else []
        mine = [a.to_json() for a in alerts if dict(a.labels).get("device") == device]
        return _json(200, {"generated_at": now, "device": status["devices"][0], "agent": agent,
                           "deployments": deployments, "alerts": mine})

    def _metrics(self, query: Mapping[str, list[str]]) -> WebAnswer:
        device = _device_of(query)
        now, since, until = self._range(query)
        tracks = device_metrics(
            self.store, device, since=since, until=until, max_points=_max_points(query)
        )
        return _json(200, {"device": device, "generated_at": now, "since": since,
                           "until": until, "tracks": [t.to_json() for t in tracks]})


def _device_of(query: Mapping[str, list[str]]) -> str:
    device = _one(query, "device")
    if not device:
        raise _BadQuery("device is required")
    return device


def _max_points(query: Mapping[str, list[str]]) -> int:
    max_points = _number(query, "max_points", _MAX_POINTS)
    assert max_points is not None
    if not 1 <= max_points <= _MAX_POINTS:
        raise _BadQuery(f"max_points must be 1..{_MAX_POINTS}")
    return int(max_points)
