"""The endpoint under 1,000 simulated devices (``endpoint_load.py``): throughput and latency are
reported, never gated; correctness is asserted: no 5xx, and every heartbeat acknowledged with a
200 is in the store, for its device, with all its metrics."""

from __future__ import annotations

from conftest import report
from endpoint_load import METRICS_PER_HEARTBEAT, run_load

DEVICES = 1000
ROUNDS = 5


def test_thousand_devices_lose_no_acknowledged_heartbeat() -> None:
    result = run_load(devices=DEVICES, rounds=ROUNDS, processes=2, threads=4)
    summary = result.summary()
    report(
        "endpoint SendHeartbeat throughput",
        result.per_second,
        unit="hb/s",
        devices=DEVICES,
        heartbeats=result.sent,
        connections=result.connections,
    )
    report("endpoint SendHeartbeat latency p50", result.percentile(0.50), unit="ms")
    report(
        "endpoint SendHeartbeat latency p99",
        result.percentile(0.99),
        unit="ms",
        max=summary["latency_ms"]["max"],
    )

    assert result.server_errors == 0, (summary, result.server_stderr[-2000:])
    assert result.sent == DEVICES * ROUNDS, summary
    # the requests are valid and signed: anything but 200 is a fault of the endpoint or the bench
    assert result.statuses == {200: DEVICES * ROUNDS}, summary
    assert result.lost == [], summary
    assert len(result.acked_per_device) == DEVICES
    # stored >= acked per device; more only if a reset answer was retried (counted as an error)
    stored = sum(result.stored_per_device.values())
    assert result.acked <= stored <= result.acked + result.transport_errors, summary
    assert result.stored_metrics == stored * METRICS_PER_HEARTBEAT, summary
    assert "Traceback" not in result.server_stderr, result.server_stderr[-2000:]
