"""What a heartbeat costs on disk in the SQLite store: at most 400 bytes for a typical 11-metric
heartbeat (one model's latency count/sum/min/max/mean/p50/p90/p95/p99, two agent metrics,
values with full double precision), measured honestly: the growth of the file, WAL copied back
and truncated, over heartbeats of many devices interleaved as a fleet sends them (no VACUUM,
so page splits and half-full pages count).  Schema 1 took ~1,450 bytes."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from edgetelemetry.server.store import Store

BOUND = 400
DEVICES, ROUNDS, WARM_UP = 200, 10, 2
STATS = ("count", "sum", "min", "max", "mean", "p50", "p90", "p95", "p99")


def heartbeat(device: str, ts: float, rng: random.Random, seq: int) -> dict[str, Any]:
    base = 5 + rng.random() * 10
    values = [600.0, base * 600 * (1 + rng.random() / 9), base / 2 * (1 + rng.random() / 9),
              base * 4, base, base, base * 1.6, base * 2, base * 3]
    values = [v if k == "count" else v * (1 + rng.random() / 7) for k, v in zip(STATS, values)]
    return {
        "AgentVersion": "1.0",
        "DeviceName": device,
        "DeviceFleetName": "line-1",
        "AgentMetrics": [
            {"MetricName": "spool-bytes", "Value": float(rng.randrange(1 << 20)),
             "Timestamp": ts, "Dimension": "all"},
            {"MetricName": "spool-seq", "Value": float(seq), "Timestamp": ts,
             "Dimension": "0123456789abcdef0123456789abcdef/1/1"},
        ],
        "Models": [{"ModelName": "resnet18", "ModelVersion": "1.0", "LatestInference": ts,
                    "ModelMetrics": [{"MetricName": f"latency-ms-{k}", "Value": v,
                                      "Timestamp": ts, "Dimension": "all"}
                                     for k, v in zip(STATS, values)]}],
    }


def test_an_11_metric_heartbeat_takes_at_most_400_bytes(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    rng = random.Random(15)
    devices = [f"dev-{i:05d}" for i in range(DEVICES)]
    with Store(str(path)) as store:
        store.register_fleet("line-1")
        store.register_devices("line-1", devices)
        start = 0
        for round_no in range(ROUNDS):
            if round_no == WARM_UP:  # every device and series exists: measure from here
                store.checkpoint()
                start = os.path.getsize(path)
            for device in devices:
                ts = 1_700_000_000.0 + 60 * round_no
                request = heartbeat(device, ts, rng, round_no)
                metrics = request["AgentMetrics"] + request["Models"][0]["ModelMetrics"]
                assert len(metrics) == 11
                assert store.record_heartbeat(request, access_key_id="AKIDFLEETLINE1",
                                              received_at=ts + rng.random())
        store.checkpoint()
        grown = os.path.getsize(path) - start
    per_heartbeat = grown / (DEVICES * (ROUNDS - WARM_UP))
    print(f"\nSQLite store: {per_heartbeat:.0f} bytes per 11-metric heartbeat")
    assert 0 < per_heartbeat <= BOUND
