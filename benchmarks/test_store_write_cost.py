"""The store's write cost stays flat as its history grows (issue 15: at 2 M stored heartbeats
within 1.2x of the cost at 10k; schema 1 took 2.3x), on SQLite and on PostgreSQL, and the fleet
status of 10,000 devices (``benchmarks/store_load.py`` says how it is measured).

Gated: the ratio of the median write cost, large store over small, measured in the same run in
alternating blocks, in wall time and in the CPU time of the writing thread (when a neighbour's
burst on the shared machine pushes either over, the writes are timed once more and the better
timing counts: a real regression fails both).  Reported: the
absolute costs (median, mean, p99), bytes per stored heartbeat, the fill time, ``fleet_status``
and ``GET /fleet/api/status`` at 10,000 devices.  CI fills 200,000 heartbeats;
``ET_STORE_BENCH=full`` fills the issue's 2,000,000.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import report
from store_load import WriteCost, fill_pair, status_times, time_pair

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from realservices import PostgreSQL, start_or_fail  # noqa: E402

DEVICES = 10_000
HISTORY = 2_000_000 if os.environ.get("ET_STORE_BENCH") == "full" else 200_000
MAX_RATIO = 1.2
# Both backends are gated.  SQLite's heartbeats were clustered by device and time until
# this gate's history: each write went into its device's page of the whole history, and the
# ratio measured 1.26-1.43 at 200k; a rowid table with an index on (device, time) appends,
# and measured 1.00-1.18 at 200k and 1.02-1.13 at 2M (docs/store.md, Performance).
GATED = {"sqlite", "postgresql"}


@pytest.fixture(scope="module")
def postgresql() -> Iterator[PostgreSQL]:
    server = PostgreSQL()
    try:
        yield start_or_fail(server)
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_write_cost_is_flat_with_history(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        pg: Any = request.getfixturevalue("postgresql")
        small, large = pg.create_database(), pg.create_database()
    else:
        small, large = str(tmp_path / "small.sqlite3"), str(tmp_path / "large.sqlite3")
    fills = fill_pair(small, large, DEVICES, HISTORY)
    rounds = {small: 1, large: HISTORY // DEVICES}
    costs = [time_pair(small, large, DEVICES, HISTORY, rounds)]
    # a neighbour's burst on a shared machine: time once more
    if backend in GATED and not passes(costs[0]):
        costs.append(time_pair(small, large, DEVICES, HISTORY, rounds))
    cost = min(costs, key=lambda c: max(c.ratio, c.cpu_ratio))
    label = f"{HISTORY / 1e6:g}M" if HISTORY >= 1e6 else f"{HISTORY // 1000}k"
    report(f"store write, {backend}, 10k stored", cost.small_ms, unit="ms",
           mean=round(cost.small_mean_ms, 3), p99=round(cost.small_p99_ms, 2),
           cpu=round(cost.small_cpu_ms, 3), writes=cost.writes, timings=len(costs))
    report(f"store write, {backend}, {label} stored", cost.large_ms, unit="ms",
           mean=round(cost.large_mean_ms, 3), p99=round(cost.large_p99_ms, 2),
           cpu=round(cost.large_cpu_ms, 3), ratio=round(cost.ratio, 3),
           cpu_ratio=round(cost.cpu_ratio, 3), mean_ratio=round(cost.mean_ratio, 3),
           gated="yes" if backend in GATED else "no")
    report(f"store bytes/heartbeat, {backend}, {label}", fills["bytes_per_heartbeat"], unit="B",
           fill_s=round(fills["fill_large_s"], 1))
    status = status_times(large)
    report(f"fleet_status(), {backend}, 10k devices", status["fleet_status_s"] * 1000, unit="ms")
    report(f"GET /fleet/api/status, {backend}, 10k devices", status["api_status_s"] * 1000,
           unit="ms", bytes=int(status["api_status_bytes"]))
    assert status["devices"] == DEVICES
    if backend in GATED:
        assert passes(cost), costs


def passes(cost: WriteCost) -> bool:
    return cost.ratio <= MAX_RATIO and cost.cpu_ratio <= MAX_RATIO
