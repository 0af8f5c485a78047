"""Where one ``SendHeartbeat`` spends its CPU, in this process: the WSGI app (SigV4, JSON,
validation, the store write) called directly, without any HTTP server, on a fresh store.

    python benchmarks/profile_heartbeat.py [--store URL] [--heartbeats 3000] [--profile]

Prints the process CPU milliseconds per heartbeat (``time.process_time``, which a busy machine
disturbs far less than wall time) and, with ``--profile``, cProfile's top functions by CPU time
(waits on the database's answers excluded).  With a PostgreSQL store it also prints the
statements each heartbeat sends (from the server's ``pg_stat_statements`` when loaded, else
counted on the client side).  The requests are the ones ``endpoint_load.py`` sends, signed
beforehand, with and without a resend key (``spool-seq``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from endpoint_load import Device, heartbeat_body, sign

from edgetelemetry.server.app import HEADER_PAIRS_KEY, EndpointApp
from edgetelemetry.server.store import open_store

URL = "http://127.0.0.1:9"  # only signed, never connected to


def requests(devices: list[Device], rounds: int, spool_seq: bool) -> list[tuple[bytes, list[
        tuple[str, str]]]]:
    now = time.time()
    out = []
    for r in range(rounds):
        for d in devices:
            body = heartbeat_body(d, r, rounds, now)
            if spool_seq:
                doc = json.loads(body)
                doc["AgentMetrics"].append({"MetricName": "spool-seq", "Value": float(r),
                                            "Timestamp": doc["AgentMetrics"][0]["Timestamp"],
                                            "Dimension": "s1/0/1"})
                body = json.dumps(doc).encode()
            headers = sign(URL, d, body)
            out.append((body, [(k.lower(), v) for k, v in headers.items()]
                        + [("content-length", str(len(body)))]))
    return out


def call(app: EndpointApp, body: bytes, pairs: list[tuple[str, str]]) -> str:
    status: list[str] = []
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/SendHeartbeat", "RAW_URI": "/SendHeartbeat",
        "wsgi.input": io.BytesIO(body), HEADER_PAIRS_KEY: pairs, "REMOTE_ADDR": "127.0.0.1",
    }
    b"".join(app(environ, lambda s, h: status.append(s)))
    return status[0]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", help="a store URL or path (default: a fresh SQLite file)")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--spool-seq", action="store_true", help="requests carry a resend key")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    devices = [Device(f"dev-{i:05d}", f"fleet-{i % 4}", f"AKIDPROF{i % 4:03d}", f"secret-{i % 4}")
               for i in range(args.devices)]
    with tempfile.TemporaryDirectory() as tmp:
        target = args.store or str(Path(tmp) / "endpoint.sqlite3")
        store = open_store(target, migrate=True)
        for f in sorted({d.fleet for d in devices}):
            store.register_fleet(f)
            store.register_devices(f, [d.name for d in devices if d.fleet == f])
        app = EndpointApp(store, {d.key: d.secret for d in devices})
        todo = requests(devices, args.rounds, args.spool_seq)
        statements = _statement_counter(store)
        # the first round creates every device's series: measured apart from the steady state
        first, rest = todo[: args.devices], todo[args.devices:]
        t0 = time.process_time()
        statuses = Counter(call(app, body, pairs) for body, pairs in first)
        t1 = time.process_time()
        sent_before = sum(statements.values())
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        if profiler:
            profiler.enable()
        statuses += Counter(call(app, body, pairs) for body, pairs in rest)
        if profiler:
            profiler.disable()
        t2 = time.process_time()
        store.close()
    print(json.dumps({
        "store": "postgresql" if target.startswith("postgres") else "sqlite",
        "statuses": dict(statuses),
        "first_round_ms_per_heartbeat": round(1000 * (t1 - t0) / len(first), 3),
        "steady_ms_per_heartbeat": round(1000 * (t2 - t1) / max(1, len(rest)), 3),
        "statements_per_heartbeat_steady": round(
            (sum(statements.values()) - sent_before) / max(1, len(rest)), 2),
    }))
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(35)
        print(out.getvalue())
    return 0


def _statement_counter(store: Any) -> Counter[str]:
    """Counts what each connection sends (PostgreSQL only: ``execute``/``executemany`` and the
    transaction's BEGIN/COMMIT)."""
    counts: Counter[str] = Counter()
    pool = getattr(store, "_pool", None)
    if pool is None:
        return counts
    import psycopg

    execute, executemany = psycopg.Connection.execute, psycopg.Cursor.executemany

    def counted_execute(self: Any, query: Any, *a: Any, **k: Any) -> Any:
        counts[str(query)[:60]] += 1
        return execute(self, query, *a, **k)

    def counted_many(self: Any, query: Any, params: Any, *a: Any, **k: Any) -> Any:
        params = list(params)
        counts[str(query)[:60]] += len(params)
        return executemany(self, query, params, *a, **k)

    psycopg.Connection.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counted_many  # type: ignore[method-assign]
    return counts


if __name__ == "__main__":
    sys.exit(main())
