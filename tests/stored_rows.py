"""What an endpoint's SQLite store holds, one row per stored metric value: what the device
agent's tests read back (the store's schema: docs/store.md; its points: server/store/codec.py).
Read-only, so a test can read while the endpoint writes."""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from edgetelemetry.server.store.codec import decode_points


class Row(NamedTuple):
    heartbeat: tuple[int, int]  # (device id, the device's heartbeat number): receipt order
    device: str
    model: str | None  # None for AgentMetrics
    metric: str
    dimension: str
    value: float | None


def stored_rows(store_path: str, device: str | None = None) -> list[Row]:
    """Every stored value (of ``device``), in the order the endpoint received the heartbeats;
    [] before the store has its tables."""
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=10,
                           isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot: every heartbeat's series are there
        names = dict(conn.execute("SELECT id, name FROM devices"))
        series = {(d, n): (agent, model, metric, dim) for d, n, agent, model, metric, dim
                  in conn.execute("SELECT device_id, number, agent, model, metric, dimension "
                                  "FROM series")}
        beats = conn.execute("SELECT device_id, number, ts, points FROM heartbeats "
                             "ORDER BY device_id, number").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()
    rows = []
    for device_id, number, ts, blob in beats:
        if device is not None and names[device_id] != device:
            continue
        for n, value, _ in decode_points(blob, ts):
            agent, model, metric, dim = series[(device_id, n)]
            rows.append(Row((device_id, number), names[device_id], None if agent else model,
                            metric, dim, value))
    return rows
