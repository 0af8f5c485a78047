"""Step 2 of the SQLite store: the data of the first schema (tables renamed ``v1_*``) written
into the compact one, in the step's transaction.

Heartbeats are read in batches in the order they were stored; each keeps its device, receive
time, agent version, access key and every metric (value, dimension, timestamp), and gets the
number it would have had.  A ``spool-seq`` key seen twice (the first schema stored resends)
keeps the second heartbeat without a key: nothing is dropped, the duplicate count is logged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from ..db import Db
from ..request import Heartbeat, SeriesKey, parse_heartbeat
from ..writes import INSERT_HEARTBEAT, UPDATE_LATEST, latest_rows, points_blob

__all__ = ["convert_v1"]

logger = logging.getLogger(__name__)

_BATCH = 2000  # heartbeats read at a time


def convert_v1(db: Db) -> None:
    db.run(
        "INSERT INTO devices(name, fleet, description, registered_at, deregistered_at, "
        "auto_registered) SELECT name, fleet, description, registered_at, deregistered_at, "
        "auto_registered FROM v1_devices ORDER BY name"
    )
    devices = {name: int(i) for i, name in db.rows("SELECT id, name FROM devices")}
    db.run(
        "INSERT INTO access_keys(name) SELECT DISTINCT access_key_id FROM v1_heartbeats "
        "WHERE access_key_id IS NOT NULL ORDER BY 1"
    )
    keys = {name: int(i) for i, name in db.rows("SELECT id, name FROM access_keys")}
    state = _State(db)
    last_id = 0
    while True:
        heartbeats = db.rows(
            "SELECT id, device, received_at, agent_version, access_key_id FROM v1_heartbeats "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (last_id, _BATCH),
        )
        if not heartbeats:
            break
        metrics: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for row in db.rows(
            "SELECT heartbeat_id, model_name, model_version, metric_name, dimension, value, ts "
            "FROM v1_metrics WHERE heartbeat_id > ? AND heartbeat_id <= ? ORDER BY rowid",
            (last_id, heartbeats[-1][0]),
        ):
            metrics[row[0]].append(row)
        for hb_id, device, received_at, agent_version, key in heartbeats:
            hb = parse_heartbeat(_request(device, agent_version, metrics[hb_id]), received_at)
            state.store(devices[device], hb, keys.get(key) if key else None)
        last_id = heartbeats[-1][0]
    state.finish()
    db.run(
        "INSERT INTO models(device_id, model_name, model_version, first_seen, last_seen, "
        "latest_sample_time, latest_inference) SELECT d.id, m.model_name, m.model_version, "
        "m.first_seen, m.last_seen, m.latest_sample_time, m.latest_inference FROM v1_models m "
        "JOIN devices d ON d.name = m.device"
    )
    db.run(
        "INSERT INTO deployment_results(device_id, received_at, deployment_name, "
        "deployment_status, status_message, start_time, end_time, models) SELECT d.id, "
        "h.received_at, r.deployment_name, r.deployment_status, r.status_message, r.start_time, "
        "r.end_time, r.models FROM v1_deployment_results r JOIN v1_heartbeats h "
        "ON h.id = r.heartbeat_id JOIN devices d ON d.name = r.device ORDER BY r.id"
    )


def _request(device: str, agent_version: str, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The request a heartbeat's metric rows came from (enough of it for ``parse_heartbeat``)."""
    agent: list[dict[str, Any]] = []
    models: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _, model, version, name, dimension, value, ts in rows:
        metric = {"MetricName": name, "Dimension": dimension, "Value": value, "Timestamp": ts}
        if model is None:
            agent.append(metric)
        else:
            models.setdefault((model, version or ""), []).append(metric)
    return {
        "DeviceName": device,
        "DeviceFleetName": "",
        "AgentVersion": agent_version,
        "AgentMetrics": agent,
        "Models": [
            {"ModelName": m, "ModelVersion": v, "ModelMetrics": metrics}
            for (m, v), metrics in models.items()
        ],
    }


class _State:
    """Numbers, streams and counters of the conversion, written as it goes."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.series: dict[int, dict[SeriesKey, int]] = defaultdict(dict)
        self.streams: dict[tuple[int, str], int] = {}
        self.heartbeats: dict[int, int] = defaultdict(int)
        self.span: dict[int, float] = defaultdict(float)
        self.last: dict[int, tuple[float, str]] = {}
        self.duplicates = 0

    def store(self, device_id: int, hb: Heartbeat, key_id: int | None) -> None:
        numbers = self.series[device_id]
        new = [key for key, _, _ in hb.points if key not in numbers]
        for key in dict.fromkeys(new):
            numbers[key] = len(numbers) + 1
            self.db.run(
                "INSERT INTO series(device_id, number, agent, model, version, metric, dimension) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device_id, numbers[key], *key),
            )
        stream_id = seq = None
        if hb.spool_key is not None:
            stream_id = self._stream(device_id, hb.spool_key[0])
            seq = hb.spool_key[1]
            if self.db.one(
                "SELECT 1 FROM heartbeats WHERE stream_id = ? AND seq = ?", (stream_id, seq)
            ):
                self.duplicates += 1
                stream_id = seq = None
        self.heartbeats[device_id] += 1
        self.db.run(
            INSERT_HEARTBEAT,
            (device_id, hb.ts, self.heartbeats[device_id], hb.received_at, hb.agent_version,
             key_id, stream_id, seq, points_blob(hb, numbers)),
        )
        self.db.many(UPDATE_LATEST, latest_rows(device_id, hb, numbers))
        self.span[device_id] = max(self.span[device_id], hb.span)
        if device_id not in self.last or hb.received_at >= self.last[device_id][0]:
            self.last[device_id] = (hb.received_at, hb.agent_version)

    def _stream(self, device_id: int, dimension: str) -> int:
        stream = self.streams.get((device_id, dimension))
        if stream is None:
            self.db.run(
                "INSERT INTO spool_streams(device_id, dimension) VALUES (?, ?)",
                (device_id, dimension),
            )
            row = self.db.one(
                "SELECT id FROM spool_streams WHERE device_id = ? AND dimension = ?",
                (device_id, dimension),
            )
            assert row is not None
            stream = self.streams[(device_id, dimension)] = int(row[0])
        return stream

    def finish(self) -> None:
        for device_id, count in self.heartbeats.items():
            received_at, agent_version = self.last[device_id]
            self.db.run(
                "UPDATE devices SET heartbeats = ?, series = ?, max_span = ?, "
                "last_heartbeat = ?, agent_version = ? WHERE id = ?",
                (count, len(self.series[device_id]), self.span[device_id], received_at,
                 agent_version, device_id),
            )
        if self.duplicates:
            logger.warning(
                "%d heartbeats were stored twice by the first schema (a resend): both copies "
                "are kept, the second without a resend key",
                self.duplicates,
            )
