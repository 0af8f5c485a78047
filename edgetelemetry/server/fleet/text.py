"""The fleet status as a table for a terminal (``edgetelemetry fleet status``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from .queries import FleetStatus

__all__ = ["render_text"]


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
