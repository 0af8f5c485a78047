"""The fleet view: which devices are connected, which models are active or sampling, and the latest
latency percentiles each model reported (``edgetelemetry fleet status``; ``GET /fleet``).

Everything here is computed from the endpoint's store at a given ``now`` (server clock):

- a device is *connected* when its latest heartbeat was received within ``offline_after`` seconds
  (default 180: three missed heartbeats at the agent's default 60 s interval), *offline* when
  older, *never* when it never sent one, *deregistered* once deregistered;
- a model is *active* when its ``LatestInference`` is within the same window, *sampling* when its
  ``LatestSampleTime`` is.  Those two are device-clock times, compared with the server clock: a
  device whose clock is far off shows wrongly (one that runs ahead always looks active);
- latency percentiles are the metrics named ``latency*-p50``, ``-p90``, ``-p99``
  (``docs/heartbeat-mapping.md``: ``latency-ms-p99`` is metric ``latency``, unit ``ms``); the base
  name without the suffix (``latency-ms``) and the dimension (``all`` by default) identify a series.

``open_read_only(path)`` opens a store file read-only (``mode=ro``; it never creates, migrates or
writes the file), so the status can be read while ``edgetelemetry serve`` writes it: the store is
in WAL mode and readers never block the writer.

The read-only store is a ``Store`` whose connection hook opens ``mode=ro``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from .store import SCHEMA_VERSION, DeviceInfo, ModelInfo, Store, StoreError

__all__ = [
    "DEFAULT_OFFLINE_AFTER",
    "LATENCY_PREFIX",
    "PERCENTILES",
    "DeviceStatus",
    "FleetStatus",
    "LatencyFigures",
    "LatencySeries",
    "ModelStatus",
    "fleet_status",
    "latency_series",
    "main",
    "open_read_only",
    "render_text",
]

logger = logging.getLogger(__name__)

DEFAULT_OFFLINE_AFTER = 180.0
LATENCY_PREFIX = "latency"
PERCENTILES: tuple[str, ...] = ("p50", "p90", "p99")

DeviceState = Literal["connected", "offline", "never", "deregistered"]


@dataclass(frozen=True)
class LatencyFigures:
    """The latest p50/p90/p99 of one latency series (``None``: that percentile was not sent)."""

    metric: str  # base name, e.g. ``latency-ms``
    dimension: str
    timestamp: float  # the metric Timestamp (window end, device clock) of the newest figure
    p50: float | None
    p90: float | None
    p99: float | None


@dataclass(frozen=True)
class ModelStatus(ModelInfo):
    """A model as the store knows it (``ModelInfo``), judged at the status's ``now``."""

    active: bool
    sampling: bool
    latency: tuple[LatencyFigures, ...] = ()


@dataclass(frozen=True)
class DeviceStatus(DeviceInfo):
    """A device as the store knows it (``DeviceInfo``), judged at the status's ``now``."""

    state: DeviceState
    models: tuple[ModelStatus, ...] = ()

    @property
    def connected(self) -> bool:
        return self.state == "connected"


@dataclass(frozen=True)
class FleetStatus:
    generated_at: float
    offline_after: float
    devices: tuple[DeviceStatus, ...] = field(default=())

    def summary(self) -> dict[str, int]:
        counts = {
            "devices": len(self.devices),
            "connected": 0,
            "offline": 0,
            "never": 0,
            "deregistered": 0,
        }
        for device in self.devices:
            counts[device.state] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document (``fleet status --json`` and ``GET /fleet/api/status``): the
        dataclasses' fields, plus ``connected`` and ``heartbeat_age`` (seconds) per device."""
        now = self.generated_at
        return {
            "generated_at": now,
            "offline_after": self.offline_after,
            "summary": self.summary(),
            "devices": [
                {
                    **asdict(d),
                    "connected": d.connected,
                    "heartbeat_age": _age(now, d.last_heartbeat),
                }
                for d in self.devices
            ],
        }


@dataclass(frozen=True)
class LatencySeries:
    """One model's latency percentiles over time: ``points[p]`` is ``[(timestamp, value), ...]``
    oldest first, for ``p`` in ``PERCENTILES`` (missing when never sent)."""

    model: str
    metric: str
    dimension: str
    points: dict[str, list[tuple[float, float]]]
    versions: tuple[str, ...]
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "metric": self.metric,
            "dimension": self.dimension,
            "versions": list(self.versions),
            "truncated": self.truncated,
            "points": {p: [[t, v] for t, v in pts] for p, pts in self.points.items()},
        }


# -- reading the store ------------------------------------------------------------------------


class _ReadOnlyStore(Store):
    """A ``Store`` on an existing file, opened ``mode=ro``: never created, migrated or written."""

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path} read-only: {exc}") from None
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _init_schema(self) -> None:
        try:
            with self._connection() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable SQLite database: {exc}") from None
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this edgetelemetry reads "
                f"{SCHEMA_VERSION}" + (" (not an endpoint store?)" if version == 0 else "")
            )


def open_read_only(path: str | os.PathLike[str]) -> Store:
    """Open an endpoint store file for reading only; ``StoreError`` if it is missing or foreign.

    The returned ``Store`` answers the query helpers (``devices()``, ``models()``,
    ``metric_series()``...); its write methods fail.  Close it (or use ``with``).
    """
    name = os.fspath(path)
    if name in ("", ":memory:"):
        raise StoreError("a read-only store needs a file")
    if not os.path.isfile(name):
        raise StoreError(f"no store at {name}")
    return _ReadOnlyStore(name)


def _percentile_bases(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """``{base: {percentile: metric name}}`` for names ending in ``-p50``/``-p90``/``-p99``."""
    bases: dict[str, dict[str, str]] = {}
    for name in names:
        base, sep, stat = name.rpartition("-")
        if sep and base and stat in PERCENTILES:
            bases.setdefault(base, {})[stat] = name
    return bases


def _latest_latency(
    store: Store, device: str, model: str, version: str, prefix: str
) -> tuple[LatencyFigures, ...]:
    figures: list[LatencyFigures] = []
    for base, by_stat in sorted(
        _percentile_bases(store.metric_names(device, model, prefix)).items()
    ):
        per_dim: dict[str, dict[str, float | None]] = {}
        newest: dict[str, float] = {}
        for stat, name in by_stat.items():
            ts, values = store.latest_points(device, model, version, name)
            if ts is None:
                continue  # sent for another version only
            for dimension, value in values.items():
                per_dim.setdefault(dimension, {})[stat] = value
                newest[dimension] = max(ts, newest.get(dimension, ts))
        for dimension in sorted(per_dim):
            stats = per_dim[dimension]
            figures.append(
                LatencyFigures(
                    base,
                    dimension,
                    newest[dimension],
                    stats.get("p50"),
                    stats.get("p90"),
                    stats.get("p99"),
                )
            )
    return tuple(figures)


def _recent(now: float, then: float | None, window: float) -> bool:
    return then is not None and now - then <= window


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(now - then, 3)


def fleet_status(
    store: Store,
    *,
    now: float | None = None,
    offline_after: float = DEFAULT_OFFLINE_AFTER,
    fleet: str | None = None,
    device: str | None = None,
    latency_prefix: str = LATENCY_PREFIX,
) -> FleetStatus:
    """The fleet as the store knows it at ``now`` (server clock, default ``time.time()``).

    ``offline_after`` (seconds) is the recency window for "connected", "active" and "sampling".
    ``fleet``/``device`` restrict the view.  Devices come ordered by fleet then name; models most
    recently reported first.
    """
    if not (offline_after > 0 and math.isfinite(offline_after)):
        raise ValueError("offline_after must be a positive number of seconds")
    now = time.time() if now is None else now
    devices: list[DeviceStatus] = []
    for info in store.devices(fleet):
        if device is not None and info.name != device:
            continue
        state: DeviceState
        if not info.registered:
            state = "deregistered"
        elif info.last_heartbeat is None:
            state = "never"
        elif _recent(now, info.last_heartbeat, offline_after):
            state = "connected"
        else:
            state = "offline"
        models = tuple(
            ModelStatus(
                **asdict(m),
                active=_recent(now, m.latest_inference, offline_after),
                sampling=_recent(now, m.latest_sample_time, offline_after),
                latency=_latest_latency(store, info.name, m.name, m.version, latency_prefix),
            )
            for m in store.models(info.name)
        )
        devices.append(DeviceStatus(**asdict(info), state=state, models=models))
    return FleetStatus(now, offline_after, tuple(devices))


def latency_series(
    store: Store,
    device: str,
    *,
    since: float | None = None,
    until: float | None = None,
    max_points: int = 1000,
    latency_prefix: str = LATENCY_PREFIX,
) -> list[LatencySeries]:
    """Every latency percentile series of ``device``'s models between ``since`` and ``until``
    (metric timestamps, inclusive), one ``LatencySeries`` per (model, base name, dimension).

    All versions of a model share its series (an upgrade shows as a step, not a new plot).  More
    than ``max_points`` points per percentile keeps the newest ones and sets ``truncated``.
    """
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    out: list[LatencySeries] = []
    model_names = sorted({m.name for m in store.models(device)})
    for model in model_names:
        bases = _percentile_bases(store.metric_names(device, model, latency_prefix))
        for base, by_stat in sorted(bases.items()):
            per_dim: dict[str, dict[str, list[tuple[float, float]]]] = {}
            versions: dict[str, set[str]] = {}
            for stat in PERCENTILES:
                name = by_stat.get(stat)
                if name is None:
                    continue
                for point in store.metric_series(device, model, name, since=since, until=until):
                    if point.value is None:
                        continue
                    per_dim.setdefault(point.dimension, {}).setdefault(stat, []).append(
                        (point.timestamp, point.value)
                    )
                    versions.setdefault(point.dimension, set()).add(point.model_version or "")
            for dimension in sorted(per_dim):
                points = per_dim[dimension]
                truncated = any(len(p) > max_points for p in points.values())
                out.append(
                    LatencySeries(
                        model=model,
                        metric=base,
                        dimension=dimension,
                        points={s: p[-max_points:] for s, p in points.items()},
                        versions=tuple(sorted(versions[dimension])),
                        truncated=truncated,
                    )
                )
    return out


# -- text ------------------------------------------------------------------------------------


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    seconds = now - then
    if seconds < 0:
        return f"in {_span(-seconds)} (clock ahead)"
    return f"{_span(seconds)} ago"


def _span(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 2 * 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [list(header), *rows]
    ]


def render_text(status: FleetStatus) -> str:
    """A table for a terminal: one row per device, model and latency series."""
    now = status.generated_at
    s = status.summary()
    lines = [
        (
            f"fleet status at {_utc(now)}: {s['devices']} device(s), {s['connected']} connected, "
            f"{s['offline']} offline, {s['never']} never seen, {s['deregistered']} deregistered "
            f"(recent = within {status.offline_after:g} s)"
        ),
        "",
    ]
    header = [
        "DEVICE",
        "FLEET",
        "STATUS",
        "LAST HEARTBEAT",
        "AGENT",
        "MODEL",
        "VERSION",
        "INFERENCE",
        "SAMPLING",
        "LATENCY",
        "DIMENSION",
        "P50",
        "P90",
        "P99",
    ]
    rows: list[list[str]] = []
    for d in status.devices:
        device_cells = [
            d.name,
            d.fleet,
            d.state,
            _ago(now, d.last_heartbeat),
            d.agent_version or "-",
        ]
        if not d.models:
            rows.append(device_cells + ["-"] + [""] * 8)
            continue
        for i, m in enumerate(d.models):
            cells = device_cells if i == 0 else [""] * len(device_cells)
            model_cells = [
                m.name or "-",
                m.version or "-",
                "active" if m.active else ("idle" if m.latest_inference else "-"),
                "sampling" if m.sampling else ("idle" if m.latest_sample_time else "-"),
            ]
            figures = m.latency or (None,)
            for j, f in enumerate(figures):
                left = cells + model_cells if j == 0 else [""] * (len(cells) + len(model_cells))
                if f is None:
                    rows.append(left + ["-", "", "", "", ""])
                else:
                    rows.append(
                        left + [f.metric, f.dimension or "-", _num(f.p50), _num(f.p90), _num(f.p99)]
                    )
    if rows:
        lines += _table(header, rows)
    else:
        lines.append("no devices registered")
    return "\n".join(lines) + "\n"


# -- the command ------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def status_parser(prog: str = "edgetelemetry fleet status") -> argparse.ArgumentParser:
    # imported here, not at the top: .cli imports .app, which imports this module
    from .cli import DEFAULT_STORE

    p = argparse.ArgumentParser(
        prog=prog,
        description="Show the devices of a self-hosted endpoint's store: connected or offline, "
        "each model active/sampling, and its latest latency percentiles. Reads the store "
        "read-only, so it runs beside 'edgetelemetry serve'.",
    )
    p.add_argument(
        "--store", default=DEFAULT_STORE, help=f"the endpoint's SQLite file ({DEFAULT_STORE})"
    )
    p.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    p.add_argument(
        "--offline-after",
        type=_positive,
        default=DEFAULT_OFFLINE_AFTER,
        metavar="SECONDS",
        help="a heartbeat (LatestInference, LatestSampleTime) is recent within this many seconds "
        f"(default {DEFAULT_OFFLINE_AFTER:g}: 3 x the 60 s heartbeat interval)",
    )
    p.add_argument("--fleet", help="only this device fleet")
    p.add_argument("--device", help="only this device")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``edgetelemetry fleet status``: print the status (table or ``--json``); 2 on a bad store."""
    args = status_parser().parse_args(argv)
    try:
        with open_read_only(args.store) as store:
            status = fleet_status(
                store, offline_after=args.offline_after, fleet=args.fleet, device=args.device
            )
    except StoreError as exc:
        print(f"edgetelemetry fleet status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        sys.stdout.write(render_text(status))
    return 0
