"""What a heartbeat write costs as the store's history grows, and how long the fleet status of
10,000 devices takes, on SQLite and on PostgreSQL.

    python benchmarks/store_load.py --backend sqlite --history 2000000

Two stores of the same fleet (10,000 devices, an 11-metric heartbeat each minute) are filled:
one with one heartbeat a device (10k stored), one with ``history`` heartbeats.  The fill writes
the rows a heartbeat makes straight into the tables, in the order a fleet sends them (every
device, then every device again), with the store's own encoding: a store's history, made in
seconds instead of hours; afterwards the store is checked to read them.  Then ``record_heartbeat``
(the endpoint's path: one durable transaction each) is timed on both stores in alternating
blocks, so that the noise of a shared machine falls on both alike; the figures are the ratios of
the medians, of the wall time and of the CPU time of the writing thread.  The fleet status
(``fleet_status``, and ``GET /fleet/api/status`` through the embedded server) is timed on the
large store.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgetelemetry.server import EndpointServer
from edgetelemetry.server.fleet import fleet_status
from edgetelemetry.server.store import Store, open_store
from edgetelemetry.server.store.codec import encode_points

FLEET = "fleet-0"
KEY = "AKIDSTOREBENCH01"
STATS = ("count", "sum", "min", "max", "mean", "p50", "p90", "p95", "p99")
AGENT = ("spool-bytes", "spool-seq")
T0 = 1_700_000_000.0
INTERVAL = 60.0
SPOOL = "0123456789abcdef0123456789abcdef/1/1"


def device_name(i: int) -> str:
    return f"dev-{i:05d}"


def values(rng: random.Random) -> list[float]:
    base = 5 + rng.random() * 10
    out = [600.0, base * 600, base / 2, base * 4, base, base, base * 1.6, base * 2, base * 3]
    return [v if k == 0 else v * (1 + rng.random() / 7) for k, v in enumerate(out)]


def heartbeat(device: str, round_no: int, rng: random.Random) -> dict[str, Any]:
    """The request ``record_heartbeat`` is timed with: 9 latency stats and 2 agent metrics."""
    ts = T0 + round_no * INTERVAL
    return {
        "AgentVersion": "1.0",
        "DeviceName": device,
        "DeviceFleetName": FLEET,
        "AgentMetrics": [
            {"MetricName": "spool-bytes", "Value": float(rng.randrange(1 << 20)),
             "Timestamp": ts, "Dimension": "all"},
            {"MetricName": "spool-seq", "Value": float(round_no), "Timestamp": ts,
             "Dimension": SPOOL},
        ],
        "Models": [{"ModelName": "resnet18", "ModelVersion": "1.0", "LatestInference": ts,
                    "ModelMetrics": [{"MetricName": f"latency-ms-{k}", "Value": v,
                                      "Timestamp": ts, "Dimension": "all"}
                                     for k, v in zip(STATS, values(rng))]}],
    }


# -- the fill -----------------------------------------------------------------------------------

# the series a heartbeat of heartbeat() makes, numbered as the store numbers them (in order)
SERIES = [(1, "", "", name, "all" if name != "spool-seq" else SPOOL) for name in AGENT] + [
    (0, "resnet18", "1.0", f"latency-ms-{k}", "all") for k in STATS
]


def _rows(devices: int, rounds: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """Heartbeat rows, every device then every device again: (device_id, ts, number,
    received_at, agent_version, key_id, stream_id, seq, points)."""
    for r in range(rounds):
        ts = T0 + r * INTERVAL
        for d in range(1, devices + 1):
            points = [(1, float(rng.randrange(1 << 20)), ts), (2, float(r), ts)]
            points += [(3 + k, v, ts) for k, v in enumerate(values(rng))]
            yield (d, ts, r + 1, ts + 0.5, "1.0", 1, d, float(r), encode_points(points, ts))


def fill(target: str, devices: int, rounds: int) -> float:
    """Fill a new store with ``devices * rounds`` heartbeats; return the seconds it took."""
    started = time.perf_counter()
    with open_store(target) as store:
        store.register_fleet(FLEET)
        names = [device_name(i) for i in range(devices)]
        for k in range(0, devices, 5000):
            store.register_devices(FLEET, names[k : k + 5000])
    rng = random.Random(rounds)
    last = T0 + (rounds - 1) * INTERVAL
    per_device = {
        "series": [(d, n + 1, *key) for d in range(1, devices + 1) for n, key in enumerate(SERIES)],
        "streams": [(d, d, SPOOL, None) for d in range(1, devices + 1)],
        "models": [(d, "resnet18", "1.0", T0, last + 0.5, None, last)
                   for d in range(1, devices + 1)],
    }
    inserts = {
        "series": "INSERT INTO series(device_id, number, agent, model, version, metric, "
                  "dimension) VALUES ({})",
        "streams": "INSERT INTO spool_streams(id, device_id, dimension, compacted) VALUES ({})",
        "models": "INSERT INTO models(device_id, model_name, model_version, first_seen, "
                  "last_seen, latest_sample_time, latest_inference) VALUES ({})",
    }
    finish = [
        f"UPDATE devices SET heartbeats = {rounds}, series = {len(SERIES)}, "
        f"last_heartbeat = {last + 0.5}, agent_version = '1.0'",
        f"UPDATE series SET last_ts = {last}, last_value = 1.0",
    ]
    heartbeats = ("INSERT INTO heartbeats(device_id, ts, number, received_at, agent_version, "
                  "key_id, stream_id, seq, points) VALUES ({})")
    if target.startswith("postgresql://"):
        _fill_postgresql(target, inserts, per_device, heartbeats, finish,
                         _rows(devices, rounds, rng))
    else:
        _fill_sqlite(target, inserts, per_device, heartbeats, finish,
                     _rows(devices, rounds, rng))
    with open_store(target) as store:  # the store reads what the fill wrote
        assert store.heartbeat_count() == devices * rounds
        assert len(store.metric_series(device_name(0), "resnet18", "latency-ms-p99")) == rounds
    return time.perf_counter() - started


def _fill_sqlite(target: str, inserts: dict[str, str], per_device: dict[str, list[Any]],
                 heartbeats: str, finish: list[str], rows: Iterator[tuple[Any, ...]]) -> None:
    import sqlite3

    with contextlib.closing(sqlite3.connect(target, isolation_level=None)) as conn:
        conn.execute("PRAGMA synchronous = OFF")  # the fill only: the timed writes are FULL
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO access_keys(id, name) VALUES (1, '{KEY}')")
        for table, sql in inserts.items():
            width = len(per_device[table][0])
            conn.executemany(sql.format(", ".join("?" * width)), per_device[table])
        conn.executemany(heartbeats.format(", ".join("?" * 9)), rows)
        for sql in finish:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _fill_postgresql(target: str, inserts: dict[str, str], per_device: dict[str, list[Any]],
                     heartbeats: str, finish: list[str], rows: Iterator[tuple[Any, ...]]) -> None:
    import psycopg

    with psycopg.connect(target) as conn:
        conn.execute(f"INSERT INTO access_keys(id, name) VALUES (1, '{KEY}')".encode())
        with conn.cursor() as cur:
            for table, sql in inserts.items():
                width = len(per_device[table][0])
                cur.executemany(sql.format(", ".join(["%s"] * width)).encode(),
                                per_device[table])
            columns = heartbeats.split("(", 1)[1].split(")", 1)[0]
            with cur.copy(f"COPY heartbeats({columns}) FROM STDIN".encode()) as copy:
                for row in rows:
                    copy.write_row(row)
        for sql in finish:
            conn.execute(sql.encode())
        conn.execute(b"ANALYZE")


# -- the measures -------------------------------------------------------------------------------


@dataclass
class WriteCost:
    small: int  # heartbeats stored in the small store
    large: int
    devices: int
    writes: int  # timed writes per store
    small_ms: float  # median ms per write
    large_ms: float
    small_mean_ms: float
    large_mean_ms: float
    small_p99_ms: float
    large_p99_ms: float
    small_cpu_ms: float  # median CPU ms per write (the writing thread)
    large_cpu_ms: float

    @property
    def ratio(self) -> float:
        return self.large_ms / self.small_ms

    @property
    def cpu_ratio(self) -> float:
        return self.large_cpu_ms / self.small_cpu_ms

    @property
    def mean_ratio(self) -> float:
        return self.large_mean_ms / self.small_mean_ms


def store_bytes(target: str) -> int:
    """The store's size: the SQLite file (WAL checkpointed), or PostgreSQL's relations."""
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(b"VACUUM ANALYZE")  # the visibility map and free space, as autovacuum
            row = conn.execute(
                b"SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN "
                b"pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
                b"AND n.nspname = current_schema()").fetchone()
            return int(row[0]) if row else 0
    with Store(target) as store:
        store.checkpoint()
    return os.path.getsize(target)


def write_cost(
    small: str, large: str, devices: int, rounds: dict[str, int], writes: int = 2000,
    block: int = 25,
) -> dict[str, tuple[list[float], list[float]]]:
    """Time ``writes`` heartbeats on each store, alternating blocks of ``block``; return the
    per-write milliseconds of each, ``{"wall": (small, large), "cpu": (small, large)}`` (the
    CPU time of the writing thread: the store's work without the fsync wait, the less noisy
    figure on a shared machine).  Devices send in a fixed random order, as a fleet's devices
    each at their own second of the minute (not in the order they were registered, which would
    put neighbours in the store's pages one after the other).  The devices timed first send one
    heartbeat each untimed, as in a server that has been running: their pages are cached."""
    times: dict[str, list[float]] = {small: [], large: []}
    cpu: dict[str, list[float]] = {small: [], large: []}
    rng = random.Random(7)
    order = random.Random(11).sample(range(devices), devices)
    with open_store(small) as small_store, open_store(large) as large_store:
        stores = {small: small_store, large: large_store}
        for target, store in stores.items():
            for i in range(min(writes, devices)):
                store.record_heartbeat(heartbeat(device_name(order[i]), rounds[target], rng))
            rounds[target] += 1
        next_device = dict.fromkeys(times, 0)
        for k in range(2 * writes // block):
            # pairs of blocks, each pair in the other order: drift lands on both alike
            pair = (small, large) if (k // 2) % 2 == 0 else (large, small)
            target = pair[k % 2]
            store = stores[target]
            for _ in range(block):
                i = next_device[target]
                next_device[target] += 1
                request = heartbeat(
                    device_name(order[i % devices]), rounds[target] + i // devices, rng
                )
                start, start_cpu = time.perf_counter(), time.thread_time()
                assert store.record_heartbeat(request, access_key_id=KEY)
                cpu[target].append((time.thread_time() - start_cpu) * 1000)
                times[target].append((time.perf_counter() - start) * 1000)
    for target in stores:  # a next call sends new heartbeats, not resends
        rounds[target] += writes // devices + 1
    return {"wall": (times[small], times[large]), "cpu": (cpu[small], cpu[large])}


def fill_pair(small: str, large: str, devices: int, history: int) -> dict[str, float]:
    """Fill the small store (a heartbeat a device) and the large one (``history``); return the
    seconds each took and the large store's bytes per heartbeat."""
    fills = {"fill_small_s": fill(small, devices, 1)}
    fills["fill_large_s"] = fill(large, devices, history // devices)
    fills["bytes_per_heartbeat"] = store_bytes(large) / history
    return fills


def time_pair(small: str, large: str, devices: int, history: int, rounds: dict[str, int],
              writes: int = 2000) -> WriteCost:
    """One timing of ``write_cost`` on filled stores (``rounds``: the next round of each)."""
    timed = write_cost(small, large, devices, rounds, writes)
    (small_ms, large_ms), (small_cpu, large_cpu) = timed["wall"], timed["cpu"]
    return WriteCost(
        small=devices, large=history, devices=devices, writes=writes,
        small_ms=statistics.median(small_ms), large_ms=statistics.median(large_ms),
        small_mean_ms=statistics.fmean(small_ms), large_mean_ms=statistics.fmean(large_ms),
        small_p99_ms=_p99(small_ms), large_p99_ms=_p99(large_ms),
        small_cpu_ms=statistics.median(small_cpu), large_cpu_ms=statistics.median(large_cpu),
    )


def measure_write_cost(small: str, large: str, devices: int, history: int,
                       writes: int = 2000) -> tuple[WriteCost, dict[str, float]]:
    fills = fill_pair(small, large, devices, history)
    rounds = {small: 1, large: history // devices}
    return time_pair(small, large, devices, history, rounds, writes), fills


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def status_times(target: str, repeat: int = 3) -> dict[str, float]:
    """Seconds for the fleet status of the store's fleet: in Python and over HTTP."""
    out: dict[str, float] = {}
    with open_store(target) as store:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            status = fleet_status(store, now=T0)
            best = min(best, time.perf_counter() - start)
        out["fleet_status_s"] = best
        out["devices"] = float(len(status.devices))
        with EndpointServer(credentials={KEY: "secret"}, store=store) as server:
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                with urllib.request.urlopen(f"{server.url}/fleet/api/status", timeout=120) as r:
                    body = r.read()
                best = min(best, time.perf_counter() - start)
            out["api_status_s"] = best
            out["api_status_bytes"] = float(len(body))
            assert len(json.load(io.BytesIO(body))["devices"]) == len(status.devices)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--history", type=int, default=2_000_000)
    p.add_argument("--writes", type=int, default=2000)
    args = p.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="et-store-bench-") as tmp:
        with contextlib.ExitStack() as stack:
            if args.backend == "postgresql":
                sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
                from realservices import PostgreSQL

                pg = stack.enter_context(PostgreSQL())
                small, large = pg.create_database(), pg.create_database()
            else:
                small, large = f"{tmp}/small.sqlite3", f"{tmp}/large.sqlite3"
            cost, fills = measure_write_cost(small, large, args.devices, args.history,
                                             args.writes)
            print(json.dumps({**asdict(cost), "ratio": round(cost.ratio, 3),
                              "cpu_ratio": round(cost.cpu_ratio, 3),
                              "mean_ratio": round(cost.mean_ratio, 3), **fills,
                              **status_times(large)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
