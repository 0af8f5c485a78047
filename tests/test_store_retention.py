"""Retention on both backends: raw heartbeats past ``keep_raw`` become hourly rollups whose
count/sum/min/max merge exactly and whose percentiles are labelled approximations; rollups past
``keep_hourly`` are dropped; a pass is bounded in time and resumes; the store stops growing
once the limits are reached (rows on both backends, the SQLite file's size)."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from store_backends import (
    registered,
    store_factory_fixture,  # noqa: F401 - the fixture
    store_target_fixture,  # noqa: F401 - the fixture
)

from edgetelemetry.cli import main as cli_main
from edgetelemetry.server.fleet import latency_series
from edgetelemetry.server.store import Compactor, FleetStore, Store, open_store

FLEET, DEVICE = "line-1", "cam-1"
HOUR, DAY = 3600.0, 86400.0
T0 = 1_700_000_000.0 - 1_700_000_000.0 % HOUR  # the start of an hour


def heartbeat(ts: float, count: float, p99: float, *, device: str = DEVICE,
              spool: float | None = None, mean: float = 5.0) -> dict[str, Any]:
    agent = [{"MetricName": "spool-bytes", "Value": 1000.0 + count, "Timestamp": ts,
              "Dimension": "all"}]
    if spool is not None:
        agent.append({"MetricName": "spool-seq", "Value": spool, "Timestamp": ts,
                      "Dimension": "0123456789abcdef0123456789abcdef/1/1"})
    stats = {"count": count, "sum": count * mean, "min": mean / 2, "max": p99 * 2,
             "mean": mean, "p99": p99}
    return {
        "AgentVersion": "1.0", "DeviceName": device, "DeviceFleetName": FLEET,
        "AgentMetrics": agent,
        "Models": [{"ModelName": "resnet18", "ModelVersion": "1", "ModelMetrics": [
            {"MetricName": f"latency-ms-{k}", "Value": v, "Timestamp": ts, "Dimension": "all"}
            for k, v in stats.items()]}],
    }


def test_an_hour_merges_exactly_and_says_what_is_approximate(
    store_factory: Callable[..., FleetStore],
) -> None:
    now = [T0 + 20 * DAY]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, [DEVICE])
    store.record_heartbeat(heartbeat(T0 + 60, 100, 10.0, mean=4.0))
    store.record_heartbeat(heartbeat(T0 + 120, 300, 30.0, mean=8.0))
    store.record_heartbeat(heartbeat(T0 + HOUR + 60, 50, 7.0))  # the next hour
    report = store.compact()
    assert report.heartbeats_rolled_up == 3 and report.complete
    assert store.metric_series(DEVICE, "resnet18", "latency-ms-p99") == []

    def hour(metric: str, model: str | None = "resnet18") -> Any:
        first, second = store.metric_rollups(DEVICE, model, metric)
        assert (first.hour, second.hour) == (T0, T0 + HOUR)
        return first

    count, total, low, high = (hour(f"latency-ms-{s}") for s in ("count", "sum", "min", "max"))
    assert (count.value, count.exact, count.statistic, count.points) == (400, True, "count", 2)
    assert (total.value, total.exact) == (100 * 4 + 300 * 8, True)
    assert (low.value, high.value, low.exact, high.exact) == (2.0, 60.0, True, True)
    mean = hour("latency-ms-mean")
    assert math.isclose(mean.value, total.value / count.value) and mean.exact  # sum / count
    p99 = hour("latency-ms-p99")
    # the count-weighted mean of the windows' p99s, labelled; the windows' extremes bound it
    assert math.isclose(p99.value, (100 * 10 + 300 * 30) / 400) and not p99.exact
    assert (p99.minimum, p99.maximum) == (10.0, 30.0) and p99.statistic == "p99"
    gauge = hour("spool-bytes", model=None)
    assert (gauge.statistic, gauge.value, gauge.exact) == ("gauge", 1200.0, True)
    assert gauge.model_version is None and p99.model_version == "1"
    assert store.metric_rollups(DEVICE, "resnet18", "latency-ms-p99", since=T0 + 1)[0].hour == (
        T0 + HOUR)


def test_late_heartbeats_merge_into_their_hour(store_factory: Callable[..., FleetStore]) -> None:
    now = [T0 + 20 * DAY]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, [DEVICE])
    store.record_heartbeat(heartbeat(T0 + 60, 100, 10.0))
    store.compact()
    store.record_heartbeat(heartbeat(T0 + 90, 300, 30.0))  # a backlog arriving late
    assert store.compact().heartbeats_rolled_up == 1
    (p99,) = store.metric_rollups(DEVICE, "resnet18", "latency-ms-p99")
    assert p99.points == 2 and math.isclose(p99.value, 25.0)
    (count,) = store.metric_rollups(DEVICE, "resnet18", "latency-ms-count")
    assert count.value == 400


def test_recent_heartbeats_stay_raw_and_old_rollups_go(
    store_factory: Callable[..., FleetStore],
) -> None:
    now = [T0 + 100 * DAY]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, [DEVICE])
    for ts in (T0, T0 + 50 * DAY, now[0] - 7 * DAY + HOUR, now[0] - 60):
        store.record_heartbeat(heartbeat(ts, 10, 1.0))
    report = store.compact(keep_raw=7 * DAY, keep_hourly=90 * DAY)
    # T0 rolled up then dropped (older than 90 days), T0 + 50 days rolled up, the rest raw
    assert report.heartbeats_rolled_up == 2 and report.rollups_dropped > 0
    assert [h.hour for h in store.metric_rollups(DEVICE, "resnet18", "latency-ms-count")] == [
        T0 + 50 * DAY]
    assert len(store.metric_series(DEVICE, "resnet18", "latency-ms-count")) == 2
    assert store.heartbeat_count(DEVICE) == 4  # stored, whatever became of them since
    with pytest.raises(ValueError, match="at least as long"):
        store.compact(keep_raw=7 * DAY, keep_hourly=DAY)


def test_a_pass_is_bounded_in_time_and_the_next_one_goes_on(
    store_factory: Callable[..., FleetStore],
) -> None:
    now = [T0 + 20 * DAY]
    devices = [f"cam-{i}" for i in range(30)]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, devices)
    for device in devices:
        for k in range(20):
            store.record_heartbeat(heartbeat(T0 + 60 * k, 10, 1.0, device=device))
    passes, rolled = 0, 0
    while True:
        report = store.compact(budget=0.005)
        passes += 1
        rolled += report.heartbeats_rolled_up
        if report.complete:
            break
        assert report.seconds < 5  # stopped near its budget, not at the end of the work
    assert passes > 1 and rolled == 30 * 20
    assert store.table_rows()["heartbeats"] == 0  # type: ignore[attr-defined]


def test_the_store_stops_growing_after_the_retention_limit(
    store_factory: Callable[..., FleetStore], store_target: str
) -> None:
    """3 devices, a heartbeat every 20 minutes for 8 days, raw kept 1 day and hourly rollups 3
    days, a compaction pass every hour: from day 4 on, rows and file size stay flat."""
    now = [T0]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, [f"cam-{i}" for i in range(3)])
    per_day: list[tuple[dict[str, int], int]] = []
    seq = 0
    for day in range(8):
        for step in range(72):
            now[0] = T0 + day * DAY + step * 1200
            for i in range(3):
                seq += 1
                store.record_heartbeat(
                    heartbeat(now[0], 100 + step, 1.0 + i, device=f"cam-{i}", spool=seq))
            if step % 3 == 2:
                store.compact(keep_raw=DAY, keep_hourly=3 * DAY)
        size = 0
        if isinstance(store, Store):
            store.checkpoint()
            size = os.path.getsize(store_target)
        per_day.append((store.table_rows(), size))  # type: ignore[attr-defined]
    rows = [r for r, _ in per_day]
    # raw: the last day and up to an hour more; rollups: the two days before, 3 x 8 series
    assert all(r["heartbeats"] <= 3 * (72 + 3) for r in rows[2:])
    steady = rows[4:]
    for table in ("heartbeats", "rollups", "series", "spool_streams"):
        assert len({r[table] for r in steady}) == 1, (table, rows)
    assert steady[0]["rollups"] == 3 * 8 * (3 - 1) * 24
    assert store.heartbeat_count() == 8 * 72 * 3
    if isinstance(store, Store):
        sizes = [s for _, s in per_day]
        assert max(sizes[4:]) <= sizes[4] * 1.02, sizes  # freed pages are reused


def test_the_compactor_runs_passes_in_the_background(
    store_factory: Callable[..., FleetStore],
) -> None:
    now = [T0 + 20 * DAY]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, [DEVICE])
    store.record_heartbeat(heartbeat(T0, 10, 1.0))
    compactor = Compactor(store, interval=0.05, budget=1.0)
    compactor.start()
    try:
        deadline = time.monotonic() + 30
        while compactor.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        compactor.stop()
    assert compactor.passes >= 2 and store.metric_series(DEVICE, "resnet18", "latency-ms-p99") == []
    assert [h.value for h in store.metric_rollups(DEVICE, "resnet18", "latency-ms-count")] == [10]
    with pytest.raises(ValueError):
        Compactor(store, keep_raw=60)


def test_store_compact_command(store_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(store_target) as store:
        registered(store, FLEET, [DEVICE])
        store.record_heartbeat(heartbeat(time.time() - 30 * DAY, 10, 1.0))
        store.record_heartbeat(heartbeat(time.time(), 10, 1.0))
    assert cli_main(["store", "compact", "--store", store_target, "--keep-raw", "7"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heartbeats_rolled_up"] == 1 and report["complete"] is True
    with pytest.raises(SystemExit) as info:
        cli_main(["store", "compact", "--store", store_target, "--keep-raw", "7",
                  "--keep-hourly", "1"])
    assert info.value.code == 2 and "at least as long" in capsys.readouterr().err


def test_the_fleet_view_plots_rolled_up_hours_as_approximate_points(
    store_factory: Callable[..., FleetStore],
) -> None:
    now = [T0]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, [DEVICE])
    for k in range(6):  # two heartbeats an hour for three hours, p99 5, 15, 25...
        store.record_heartbeat(heartbeat(T0 + k * 1800, 100, 5.0 + 10 * k))
    now[0] = T0 + 2 * HOUR + 7 * DAY  # the first two hours are past keep_raw
    assert store.compact().heartbeats_rolled_up == 4
    (series,) = latency_series(store, DEVICE, since=T0)
    assert series.points["p99"] == [(T0, 10.0), (T0 + HOUR, 30.0), (T0 + 2 * HOUR, 45.0),
                                    (T0 + 2.5 * HOUR, 55.0)]
    assert series.hourly_until == T0 + 2 * HOUR
    assert series.to_json()["hourly_until"] == T0 + 2 * HOUR
    (recent,) = latency_series(store, DEVICE, since=T0 + 2 * HOUR)
    assert recent.hourly_until is None and len(recent.points["p99"]) == 2


def test_heartbeats_are_stored_while_a_pass_runs(
    store_factory: Callable[..., FleetStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass works in small transactions: a writer beside it gets its turn between them
    instead of waiting for the pass to end."""
    monkeypatch.setattr("edgetelemetry.server.store.compaction._BATCH", 5)
    now = [T0]
    devices = [f"cam-{i}" for i in range(4)]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, devices + [DEVICE])
    for k in range(60):
        for device in devices:
            store.record_heartbeat(heartbeat(T0 + 60 * k, 10, 1.0, device=device))
    now[0] = T0 + 20 * DAY
    events: list[tuple[float, str]] = []
    done = threading.Event()

    def write() -> None:
        seq = 0
        while not done.is_set():
            seq += 1
            assert store.record_heartbeat(heartbeat(now[0], 1, 1.0, spool=seq))
            events.append((time.monotonic(), "write"))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.2)
        start = time.monotonic()
        report = store.compact()
        end = time.monotonic()
    finally:
        done.set()
        writer.join()
    assert report.heartbeats_rolled_up == 4 * 60 and report.complete
    during = [t for t, _ in events if start < t < end]
    assert during, "no heartbeat was stored while the pass ran"
