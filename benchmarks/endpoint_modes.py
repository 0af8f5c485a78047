"""The endpoint's ways of running, side by side in one run: the embedded server, ``--workers N``
on SQLite, ``--workers N`` on PostgreSQL, each under the same simulated devices.

    python benchmarks/endpoint_modes.py --devices 1000 --rounds 3 [--postgresql URL]

Each mode gets a fresh store with every device registered and its own ``edgetelemetry serve``
process; the client processes of ``endpoint_load.py`` sign every request first, then send over
keep-alive connections.  Afterwards the store is read back through the store interface
(``heartbeat_count`` per device): lost = acknowledged but not stored, duplicated = stored more
often than sent.

CPU: the processes of the server (``serve`` and its workers) and, when given, of the store's
server (PostgreSQL's postmaster and backends) are sampled from ``/proc`` at the common start
and after the last answer: their CPU milliseconds per acknowledged heartbeat say what the
endpoint costs whatever else the machine is doing, and so what a quiet machine would carry
(``cores x 1000 / ms per heartbeat``, the clients elsewhere).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
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
    server_cpu_s: float = 0.0  # serve and its workers, during the sending
    store_cpu_s: float = 0.0  # the store's server (PostgreSQL), during the sending
    client_cpu_s: float = 0.0  # the load generator's processes, signing excluded

    @property
    def cpu_ms_per_heartbeat(self) -> float:
        return 1000 * (self.server_cpu_s + self.store_cpu_s) / self.acked if self.acked else 0.0

    @property
    def per_second(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "devices": self.devices, "sent": self.sent, "acked": self.acked,
            "heartbeats_per_second": round(self.per_second, 1), "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2), "lost": self.lost, "duplicated": self.duplicated,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_cpu_s": round(self.server_cpu_s, 2), "store_cpu_s": round(self.store_cpu_s, 2),
            "client_cpu_s": round(self.client_cpu_s, 2),
            "cpu_ms_per_heartbeat": round(self.cpu_ms_per_heartbeat, 3),
        }


def family(pid: int) -> set[int]:
    """``pid`` and its descendants, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cpu_seconds(pids: set[int]) -> float:
    """CPU time of ``pids`` and of their children already reaped (utime, stime, cutime,
    cstime), in seconds; a process gone meanwhile counts 0."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


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


def stored_counts(store: str, members: list[Device]) -> dict[str, int]:
    with open_store(store) as reader:
        return {d.name: reader.heartbeat_count(d.name) for d in members}


def _send(
    url: str,
    members: list[Device],
    rounds: int,
    processes: int,
    threads: int,
    on_start: Callable[[], None] | None = None,
    first_key: tuple[str, int] = ("bench", 0),
) -> tuple[list[tuple[str, int, float]], float, float]:
    """``rounds`` heartbeats of every device from ``processes`` client processes of
    ``threads`` connections each, all signed before the common start: each answer (device,
    status, ms), the seconds from the start to the last answer and the clients' CPU seconds
    meanwhile.  ``on_start`` runs just before the start.  Every heartbeat carries a resend key
    as an agent's do: spool ``first_key[0]``, numbered from ``first_key[1]``."""
    ctx = multiprocessing.get_context("spawn")
    ready, start_at, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(url, members[k::processes], rounds, threads,
                                         ready, start_at, results, True, first_key))
        for k in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        _get(ready, procs)
    if on_start is not None:
        on_start()
    started = time.perf_counter()
    start_at.set()
    rows: list[tuple[str, int, float]] = []
    ended, client_cpu = started, 0.0
    for _ in procs:
        out, _errors, end, cpu = _get(results, procs)
        rows += out
        ended = max(ended, end)
        client_cpu += cpu
    for p in procs:
        p.join(30)
    return rows, ended - started, client_cpu


def run_mode(
    mode: str,
    store: str,
    extra: Sequence[str],
    devices: int,
    rounds: int,
    processes: int = 2,
    threads: int = 4,
    store_pids: Callable[[], set[int]] | None = None,
    warmup: int = 0,
) -> ModeResult:
    """One mode: start ``serve`` with ``extra`` on ``store``, send, stop, read back.
    ``store_pids``: the processes of the store's server, for its CPU time.  ``warmup`` rounds
    go first, outside the figures: the steady state of a fleet, where a device's first
    heartbeat (its series numbered) is one in thousands."""
    members = fleet(devices)
    with tempfile.TemporaryDirectory(prefix="et-modes-") as tmp:
        work = Path(tmp)
        store = store.replace("{work}", str(work))
        proc, url, log_path = _start(work, members, store, extra)
        spool = uuid.uuid4().hex[:12]  # keys of their own: modes may share a database
        try:
            if warmup:  # every device's first heartbeat, and each worker's first sight of it
                warm, _, _ = _send(url, members, warmup, processes, threads, first_key=(spool, 0))
                refused = Counter(status for _, status, _ in warm if status != 200)
                if refused:
                    raise RuntimeError(f"warm-up answers other than 200: {dict(refused)}")
            before = stored_counts(store, members)  # warm-up, or a database another mode filled
            server_pids = family(proc.pid)
            pg_pids = store_pids() if store_pids else set()
            cpu_at_start: list[float] = []

            def started() -> None:
                cpu_at_start[:] = [cpu_seconds(server_pids), cpu_seconds(pg_pids)]

            rows, seconds, client_cpu = _send(url, members, rounds, processes, threads,
                                              on_start=started, first_key=(spool, warmup))
            server_cpu = cpu_seconds(server_pids | family(proc.pid)) - cpu_at_start[0]
            store_cpu = cpu_seconds(pg_pids | (store_pids() if store_pids else set()))
            store_cpu -= cpu_at_start[1]
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
        after = stored_counts(store, members)
        stored = {name: after[name] - before[name] for name in after}
    latencies = sorted(ms for _, status, ms in rows if status)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return ModeResult(
        mode=mode, devices=devices, sent=len(rows), acked=sum(acked.values()),
        seconds=seconds, p50_ms=pick(0.50) if latencies else float("nan"),
        p99_ms=pick(0.99) if latencies else float("nan"),
        lost=sum(max(0, n - stored.get(d, 0)) for d, n in acked.items()),
        duplicated=sum(max(0, stored[d.name] - rounds) for d in members),
        statuses=dict(Counter(status for _, status, _ in rows)), server_log=log,
        server_cpu_s=server_cpu, store_cpu_s=store_cpu, client_cpu_s=client_cpu,
    )


def modes(workers: int, postgresql_url: str | None) -> list[tuple[str, str, list[str]]]:
    found = [
        ("embedded, SQLite", "{work}/endpoint.sqlite3", []),
        (f"{workers} workers, SQLite", "{work}/endpoint.sqlite3", ["--workers", str(workers)]),
    ]
    if postgresql_url:
        found.append((f"{workers} workers, PostgreSQL", postgresql_url,
                      ["--workers", str(workers)]))
        # the same store in one process: separates what gunicorn costs from what the store does
        found.append(("embedded, PostgreSQL", postgresql_url, []))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warmup", type=int, default=0, metavar="ROUNDS",
                   help="rounds sent first, outside the figures (the steady state)")
    p.add_argument("--postgresql", metavar="URL", help="an empty PostgreSQL database")
    args = p.parse_args(argv)
    for name, store, extra in modes(args.workers, args.postgresql):
        result = run_mode(name, store, extra, args.devices, args.rounds, warmup=args.warmup)
        print(json.dumps(result.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
