"""Heartbeats/s and p99 of the endpoint's ways of running, in one run (``endpoint_modes.py``):
the embedded server, 2 workers on SQLite, 2 workers on PostgreSQL.  Reported with the machine
and as ratios to the embedded server measured in the same run; gated on correctness (every
request 200, 0 lost, 0 duplicated).  1,000 devices x 6 rounds in CI after a warm-up round (the
steady state of a fleet: a device's first heartbeat, which numbers its series, is one in
thousands there); ``ET_BENCH=full`` adds 10,000 devices.  CPU per heartbeat (the endpoint's
processes and PostgreSQL's, clients apart) gives the capacity of the machine's cores with the
clients elsewhere: ``cores x 1000 / ms``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import report
from endpoint_modes import ModeResult, modes, run_mode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from realservices import PostgreSQL  # noqa: E402 - the team's real-server harness

FULL = os.environ.get("ET_BENCH", "ci") == "full"
SIZES = [(1000, 6)] + ([(10_000, 2)] if FULL else [])
WARMUP = 1  # rounds before the measured ones
WORKERS = 2
CORES = os.cpu_count() or 1
# Issue 15's goal: 2 workers on PostgreSQL take >= 2x what the embedded server took on SQLite
# (~800/s then). With the load generator on the same 2 cores, and neighbours on the machine,
# the same-run ratio was 1.4-2.5x over a day of runs (docs/operations.md, Capacity): it is
# reported against 2x, and gated at 1.2x, below which workers on PostgreSQL would no longer pay
# for themselves (before the embedded server ran in the workers it was 0.66-0.91x).
GOAL_RATIO = 2.0
GATED_RATIO = 1.2


def check(result: ModeResult) -> None:
    report(f"endpoint {result.mode} ({result.devices} devices) throughput", result.per_second,
           unit="hb/s", sent=result.sent)
    report(f"endpoint {result.mode} ({result.devices} devices) p99", result.p99_ms, unit="ms",
           p50=round(result.p50_ms, 2))
    report(f"endpoint {result.mode} ({result.devices} devices) CPU per heartbeat",
           result.cpu_ms_per_heartbeat, unit="ms", server=round(result.server_cpu_s, 2),
           store_server=round(result.store_cpu_s, 2), clients=round(result.client_cpu_s, 2))
    if result.cpu_ms_per_heartbeat:
        report(f"endpoint {result.mode} ({result.devices} devices) capacity of {CORES} cores",
               CORES * 1000 / result.cpu_ms_per_heartbeat, unit="hb/s",
               derived="cores x 1000 / CPU ms per heartbeat")
    assert result.statuses == {200: result.sent}, (result.summary(), result.server_log[-2000:])
    assert result.lost == 0 and result.duplicated == 0, result.summary()
    assert "Traceback" not in result.server_log, result.server_log[-3000:]


def test_embedded_and_workers_on_sqlite() -> None:
    for devices, rounds in SIZES:
        results = [run_mode(name, store, extra, devices, rounds, warmup=WARMUP)
                   for name, store, extra in modes(WORKERS, None)]
        for result in results:
            check(result)
        embedded, workers = results
        ratio = workers.per_second / embedded.per_second
        report(f"endpoint {WORKERS} workers / embedded, SQLite ({devices} devices)", ratio,
               unit="x", gated="no")


def test_workers_on_postgresql_against_the_embedded_server(tmp_path: Path) -> None:
    """Issue 15's goal: 2 workers on PostgreSQL take >= 2x what the embedded server takes on
    SQLite in the same run (reported; gated at 1.2x)."""
    with PostgreSQL() as server:
        url = server.create_database("bench")
        migrate = subprocess.run(
            [sys.executable, "-m", "edgetelemetry", "store", "migrate", "--store", url],
            capture_output=True, text=True, timeout=120,
        )
        assert migrate.returncode == 0, migrate.stderr.strip()[-300:]
        for devices, rounds in SIZES:
            results = [run_mode(name, store, extra, devices, rounds, warmup=WARMUP,
                                store_pids=server.pids if store == url else None)
                       for name, store, extra in modes(WORKERS, url)]
            for result in results:
                check(result)
            embedded, _, postgresql, _ = results
            ratio = postgresql.per_second / embedded.per_second
            report(f"endpoint {WORKERS} workers PostgreSQL / embedded SQLite ({devices} "
                   "devices)", ratio, unit="x", goal=GOAL_RATIO, gated=GATED_RATIO)
            assert ratio >= GATED_RATIO, (embedded.summary(), postgresql.summary())
            server.drop_database("bench")
            url = server.create_database("bench")
            subprocess.run([sys.executable, "-m", "edgetelemetry", "store", "migrate",
                            "--store", url], check=True, capture_output=True, timeout=120)
