"""``GET /metrics`` at 1,000 and 10,000 devices (issue 16): scrape time and size.

Each device has one model reporting eight figures (count, sum, p50, p90, p99, dropped, a mean
and a gauge) and two agent metrics, so a device is 3 device series + 8 model series + 3 window
stamps + 2 agent series = 16 series.  Scrapes are real HTTP GETs of a started endpoint on a
SQLite store, timed in alternating rounds (1k, 10k, 1k, ...) so a neighbour's burst hits both.

Gated, on ratios only: the scrape's cost per device at 10,000 within 1.5x of its cost at 1,000
(the collector is linear: three queries, then one pass), and its bytes per device within 5%.
Reported: scrape time (best and median), bytes, series.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from edgetelemetry.server import EndpointServer  # noqa: E402

FLEET = "bench"
SIZES = (1_000, 10_000)
ROUNDS = 5
MAX_TIME_RATIO = 1.5
MAX_SIZE_RATIO = 1.05


def fill(server: EndpointServer, devices: int) -> float:
    store = server.store
    store.register_fleet(FLEET)
    names = [f"dev-{i:05d}" for i in range(devices)]
    store.register_devices(FLEET, names)
    now = time.time()
    started = time.perf_counter()
    for i, name in enumerate(names):
        figures = [
            ("latency-ms-count", 120.0),
            ("latency-ms-sum", 600.0 + i % 7),
            ("latency-ms-p50", 4.5),
            ("latency-ms-p90", 7.0),
            ("latency-ms-p99", 9.5),
            ("latency-ms-dropped", 0.0),
            ("confidence-mean", 0.93),
            ("queue-depth", 3.0),
        ]
        store.record_heartbeat(
            {
                "AgentVersion": "1.2",
                "DeviceName": name,
                "DeviceFleetName": FLEET,
                "Models": [
                    {
                        "ModelName": "detector",
                        "ModelVersion": "2.1",
                        "LatestInference": now,
                        "ModelMetrics": [
                            {"MetricName": n, "Value": v, "Timestamp": now, "Dimension": "all"}
                            for n, v in figures
                        ],
                    }
                ],
                "AgentMetrics": [
                    {"MetricName": n, "Value": 0.0, "Timestamp": now, "Dimension": "all"}
                    for n in ("spool-records", "dead-letters")
                ],
            }
        )
    return time.perf_counter() - started


def scrape(port: int) -> tuple[float, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        started = time.perf_counter()
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        body = answer.read()
        took = time.perf_counter() - started
    finally:
        conn.close()
    assert answer.status == 200
    return took, body


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Any]]:
    out: dict[int, Any] = {}
    try:
        for size in SIZES:
            server = EndpointServer(
                str(tmp_path_factory.mktemp(f"m{size}") / "s.sqlite3"),
                credentials={"AKIDBENCH": "secret"},
            )
            out[size] = server
            fill_s = fill(server, size)
            server.start()
            report(f"metrics fill, {size} devices", fill_s, unit="s")
        yield out
    finally:
        for server in out.values():
            server.stop()


def test_metrics_scrape_scales_linearly(servers: dict[int, Any]) -> None:
    times: dict[int, list[float]] = {size: [] for size in SIZES}
    sizes: dict[int, int] = {}
    for size in SIZES:
        scrape(servers[size].port)  # warm the store's caches once
    for _ in range(ROUNDS):
        for size in SIZES:
            took, body = scrape(servers[size].port)
            times[size].append(took)
            sizes[size] = len(body)
            assert body.count(b"\nedgetelemetry_device_up{") == size
    small, large = SIZES
    per_device = {s: min(times[s]) / s for s in SIZES}
    ratio = per_device[large] / per_device[small]
    size_ratio = (sizes[large] / large) / (sizes[small] / small)
    for s in SIZES:
        report(
            f"GET /metrics, {s} devices",
            min(times[s]) * 1000,
            unit="ms",
            median_ms=round(statistics.median(times[s]) * 1000, 1),
            bytes=sizes[s],
            series=16 * s,
        )
    report(
        "GET /metrics, per-device cost 10k / 1k",
        ratio,
        unit="ratio",
        bytes_ratio=round(size_ratio, 3),
    )
    print(
        f"\n/metrics: 1k {min(times[small]) * 1000:.0f} ms {sizes[small] / 1e6:.2f} MB; "
        f"10k {min(times[large]) * 1000:.0f} ms {sizes[large] / 1e6:.2f} MB; "
        f"per-device ratio {ratio:.2f}, bytes ratio {size_ratio:.3f}"
    )
    assert size_ratio < MAX_SIZE_RATIO
    assert ratio < MAX_TIME_RATIO, (per_device, times)
