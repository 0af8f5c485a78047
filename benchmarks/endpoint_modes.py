"""The endpoint's ways of running, side by side in one run: the embedded server, ``--workers N``
on SQLite, ``--workers N`` on PostgreSQL, each under the same simulated devices.

    python benchmarks/endpoint_modes.py --devices 1000 --rounds 3 [--postgresql URL]

Each mode gets a fresh store with every device registered and its own ``edgetelemetry serve``
process; the client processes of ``endpoint_load.py`` sign every request first, then send over
keep-alive connections.  Afterwards the store is read back through the store interface
(``heartbeat_count`` per device): lost = acknowledged but not stored, duplicated = stored more
often than sent.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endpoint_load import FLEETS, Device, _get, server_files, worker

from edgetelemetry.server.store import open_store


@dataclass
class ModeResult:
    mode: str
    devices: int
    sent: int
    acked: int
    seconds: float
    p50_ms: float
    p99_ms: float
    lost: int
    duplicated: int
    statuses: dict[int, int]
    server_log: str

    @property
    def per_second(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "devices": self.devices, "sent": self.sent, "acked": self.acked,
            "heartbeats_per_second": round(self.per_second, 1), "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2), "lost": self.lost, "duplicated": self.duplicated,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def fleet(devices: int) -> list[Device]:
    return [
        Device(f"dev-{i:05d}", f"fleet-{i % FLEETS}", f"AKIDLOADFLEET{i % FLEETS:03d}",
               f"load-secret-{i % FLEETS}")
        for i in range(devices)
    ]


def _start(work: Path, devices: list[Device], store: str, extra: Sequence[str]) -> tuple[
        subprocess.Popen[str], str, Path]:
    creds, registry = server_files(work, devices)
    log_path = work / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgetelemetry", "serve", "--store", store,
             "--credentials-file", str(creds), "--registry", str(registry), "--port", "0",
             "--log-level", "WARNING", *extra],
            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"serve did not start: {line}{log_path.read_text()[-2000:]}")
    return proc, line.split("listening on ", 1)[1].split()[0], log_path


def run_mode(
    mode: str,
    store: str,
    extra: Sequence[str],
    devices: int,
    rounds: int,
    processes: int = 2,
    threads: int = 4,
) -> ModeResult:
    """One mode: start ``serve`` with ``extra`` on ``store``, send, stop, read back."""
    members = fleet(devices)
    with tempfile.TemporaryDirectory(prefix="et-modes-") as tmp:
        work = Path(tmp)
        store = store.replace("{work}", str(work))
        proc, url, log_path = _start(work, members, store, extra)
        try:
            ctx = multiprocessing.get_context("spawn")
            ready, start_at, results = ctx.Queue(), ctx.Event(), ctx.Queue()
            procs = [
                ctx.Process(target=worker, args=(url, members[k::processes], rounds, threads,
                                                 ready, start_at, results))
                for k in range(processes)
            ]
            for p in procs:
                p.start()
            for _ in procs:
                _get(ready, procs)
            started = time.perf_counter()
            start_at.set()
            rows: list[tuple[str, int, float]] = []
            ended = started
            for _ in procs:
                out, _errors, end = _get(results, procs)
                rows += out
                ended = max(ended, end)
            for p in procs:
                p.join(30)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        log = log_path.read_text(errors="replace")
        acked = Counter(device for device, status, _ in rows if status == 200)
        reader: Any = open_store(store)
        try:
            stored = {d.name: reader.heartbeat_count(d.name) for d in members}
        finally:
            reader.close()
    latencies = sorted(ms for _, status, ms in rows if status)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return ModeResult(
        mode=mode, devices=devices, sent=len(rows), acked=sum(acked.values()),
        seconds=ended - started, p50_ms=pick(0.50) if latencies else float("nan"),
        p99_ms=pick(0.99) if latencies else float("nan"),
        lost=sum(max(0, n - stored.get(d, 0)) for d, n in acked.items()),
        duplicated=sum(max(0, stored[d.name] - rounds) for d in members),
        statuses=dict(Counter(status for _, status, _ in rows)), server_log=log,
    )


def modes(workers: int, postgresql_url: str | None) -> list[tuple[str, str, list[str]]]:
    found = [
        ("embedded, SQLite", "{work}/endpoint.sqlite3", []),
        (f"{workers} workers, SQLite", "{work}/endpoint.sqlite3", ["--workers", str(workers)]),
    ]
    if postgresql_url:
        found.append((f"{workers} workers, PostgreSQL", postgresql_url,
                      ["--workers", str(workers)]))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--postgresql", metavar="URL", help="an empty PostgreSQL database")
    args = p.parse_args(argv)
    for name, store, extra in modes(args.workers, args.postgresql):
        print(json.dumps(run_mode(name, store, extra, args.devices, args.rounds).summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
