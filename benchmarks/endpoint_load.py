"""Load on the self-hosted endpoint: many simulated devices send signed heartbeats over loopback.

    python benchmarks/endpoint_load.py --devices 1000 --rounds 3

``edgetelemetry serve`` runs as its own process on a fresh SQLite store with every device
registered.  Worker processes play the devices: each signs its share of ``SendHeartbeat`` requests
ahead of time with botocore's ``SigV4Auth`` (boto3 clients are too heavy to hold a thousand of),
then sends them over keep-alive ``http.client`` connections, a few threads per worker, round by
round (every device once, then again).  A request's latency is from the first byte sent to the
whole answer read.  Afterwards the store is read back: every heartbeat answered 200 must be there,
for the right device, with all its metrics.

Nothing absolute is gated (the machine is shared); ``benchmarks/test_endpoint_load.py`` asserts
correctness only: no 5xx, no acknowledged heartbeat missing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from edgetelemetry.server.store import open_read_only

REGION = "us-east-1"
FLEETS = 4
METRICS_PER_HEARTBEAT = 9 + 2  # latency-ms count..p99, two agent metrics
_STATS = ("count", "sum", "min", "max", "mean", "p50", "p90", "p95", "p99")


@dataclass(frozen=True)
class Device:
    name: str
    fleet: str
    key: str
    secret: str


@dataclass
class LoadResult:
    devices: int
    rounds: int
    connections: int
    sent: int
    seconds: float
    statuses: dict[int, int]
    latencies_ms: list[float] = field(repr=False)
    acked_per_device: dict[str, int] = field(repr=False)
    stored_per_device: dict[str, int] = field(repr=False)
    stored_metrics: int = 0
    transport_errors: int = 0
    server_stderr: str = field(default="", repr=False)

    @property
    def acked(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def per_second(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def lost(self) -> list[str]:
        """Devices with fewer heartbeats stored than were acknowledged."""
        return sorted(
            d for d, n in self.acked_per_device.items() if self.stored_per_device.get(d, 0) < n
        )

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "rounds": self.rounds,
            "connections": self.connections,
            "sent": self.sent,
            "acked": self.acked,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": self.transport_errors,
            "seconds": round(self.seconds, 3),
            "heartbeats_per_second": round(self.per_second, 1),
            "latency_ms": {
                "p50": round(self.percentile(0.50), 2),
                "p90": round(self.percentile(0.90), 2),
                "p99": round(self.percentile(0.99), 2),
                "max": round(max(self.latencies_ms, default=float("nan")), 2),
                "mean": round(statistics.fmean(self.latencies_ms), 2)
                if self.latencies_ms
                else None,
            },
            "stored_heartbeats": sum(self.stored_per_device.values()),
            "stored_metrics": self.stored_metrics,
            "lost_acked": len(self.lost),
        }


def heartbeat_body(
    device: Device, round_no: int, rounds: int, now: float,
    resend_key: tuple[str, int] | None = None,
) -> bytes:
    """A typical agent heartbeat: one model, one latency series, two agent metrics; with
    ``resend_key`` (spool id, sequence number), the ``spool-seq`` metric an agent's spooled
    heartbeat carries (one stored heartbeat per key and device, docs/store.md)."""
    ts = int(now) - (rounds - 1 - round_no) * 60
    base = 5.0 + (sum(device.name.encode()) % 50) / 10 + round_no
    values = {
        "count": 600.0,
        "sum": base * 600,
        "min": base * 0.5,
        "max": base * 4,
        "mean": base,
        "p50": base,
        "p90": base * 1.6,
        "p95": base * 2,
        "p99": base * 3,
    }
    agent_metrics = [
        {"MetricName": "spool-bytes", "Value": 4096.0, "Timestamp": ts, "Dimension": "all"},
        {"MetricName": "heartbeat-retries", "Value": 0.0, "Timestamp": ts, "Dimension": "all"},
    ]
    if resend_key is not None:
        agent_metrics.append({"MetricName": "spool-seq", "Value": float(resend_key[1]),
                              "Timestamp": ts, "Dimension": f"{resend_key[0]}/0/1"})
    return json.dumps(
        {
            "AgentVersion": "1.0",
            "DeviceName": device.name,
            "DeviceFleetName": device.fleet,
            "AgentMetrics": agent_metrics,
            "Models": [
                {
                    "ModelName": "resnet18",
                    "ModelVersion": "1.0",
                    "LatestInference": ts,
                    "ModelMetrics": [
                        {
                            "MetricName": f"latency-ms-{s}",
                            "Value": v,
                            "Timestamp": ts,
                            "Dimension": "all",
                        }
                        for s, v in values.items()
                    ],
                }
            ],
        }
    ).encode()


def sign(url: str, device: Device, body: bytes) -> dict[str, str]:
    """Headers of a ``POST /SendHeartbeat`` signed by botocore as boto3 would sign it."""
    host = urlsplit(url).netloc
    request = AWSRequest(method="POST", url=f"{url}/SendHeartbeat", data=body)
    request.headers["Host"] = host
    request.headers["Content-Type"] = "application/json"
    SigV4Auth(Credentials(device.key, device.secret), "sagemaker", REGION).add_auth(request)
    return dict(request.headers.items())


def _send_all(
    url: str, requests: list[tuple[str, bytes, dict[str, str]]], out: list[tuple[str, int, float]]
) -> int:
    """Send on one keep-alive connection, reconnecting when the server closes it."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    errors = 0
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        for device, body, headers in requests:
            for attempt in (1, 2):
                start = time.perf_counter()
                try:
                    conn.request("POST", "/SendHeartbeat", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    # a reset before any answer: never acknowledged, so retrying cannot duplicate
                    # an acknowledged heartbeat (at worst it stores one the client did not see)
                    errors += 1
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=60)
                    if attempt == 2:
                        out.append((device, 0, (time.perf_counter() - start) * 1000))
                    continue
                out.append((device, response.status, (time.perf_counter() - start) * 1000))
                if response.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=60)
                break
    finally:
        conn.close()
    return errors


def _request_bytes(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The whole ``POST /SendHeartbeat`` as it goes on the wire (HTTP/1.1, keep-alive)."""
    head = ["POST /SendHeartbeat HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    if not any(k.lower() == "content-length" for k in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _exchange(sock: socket.socket, request: bytes, pending: bytearray) -> tuple[int, bool]:
    """Send ``request`` and read its whole answer: (status, whether the server closes).
    ``pending`` carries bytes read past an answer (none with one request at a time)."""
    sock.sendall(request)
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before an answer")
        pending += chunk
    end = pending.index(b"\r\n\r\n") + 4
    lines = bytes(pending[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, closes = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            closes = True
    while len(pending) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside an answer")
        pending += chunk
    del pending[: end + length]
    return status, closes


def _send_all_lean(
    url: str, requests: list[tuple[str, bytes, dict[str, str]]], out: list[tuple[str, int, float]]
) -> int:
    """``_send_all`` with the requests written out beforehand and answers read with a minimal
    parser: a load generator a few times cheaper than ``http.client``, so that on a machine it
    shares with the server it takes less of the CPU it measures."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    wire = [(device, _request_bytes(url, body, headers)) for device, body, headers in requests]
    errors = 0
    sock: socket.socket | None = None
    pending = bytearray()
    try:
        for device, request in wire:
            for attempt in (1, 2):
                start = time.perf_counter()
                try:
                    if sock is None:
                        sock = socket.create_connection(address, timeout=60)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        pending.clear()
                    status, closes = _exchange(sock, request, pending)
                except (OSError, ValueError, IndexError):
                    # never acknowledged: a retry cannot duplicate an acknowledged heartbeat
                    errors += 1
                    if sock is not None:
                        sock.close()
                    sock = None
                    if attempt == 2:
                        out.append((device, 0, (time.perf_counter() - start) * 1000))
                    continue
                out.append((device, status, (time.perf_counter() - start) * 1000))
                if closes:
                    sock.close()
                    sock = None
                break
    finally:
        if sock is not None:
            sock.close()
    return errors


def worker(
    url: str,
    devices: list[Device],
    rounds: int,
    threads: int,
    ready: Any,
    start_at: Any,
    results: Any,
    lean: bool = False,
    first_key: tuple[str, int] | None = None,
) -> None:
    """One client process: sign everything first, wait for the common start, send, report
    (answers, transport errors, when the last answer came, CPU seconds spent sending).
    ``lean``: send with ``_send_all_lean`` instead of ``http.client``.  ``first_key``: the
    heartbeats carry resend keys of spool ``first_key[0]``, numbered from ``first_key[1]``."""
    now = time.time()
    per_thread: list[list[tuple[str, bytes, dict[str, str]]]] = [[] for _ in range(threads)]
    i = 0
    for round_no in range(rounds):
        for device in devices:
            key = None if first_key is None else (first_key[0], first_key[1] + round_no)
            body = heartbeat_body(device, round_no, rounds, now, key)
            per_thread[i % threads].append((device.name, body, sign(url, device, body)))
            i += 1
    outs: list[list[tuple[str, int, float]]] = [[] for _ in range(threads)]
    errors = [0] * threads

    send = _send_all_lean if lean else _send_all

    def run(k: int) -> None:
        errors[k] = send(url, per_thread[k], outs[k])

    ready.put(len(devices))
    start_at.wait()
    cpu_at_start = time.process_time()
    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put(([row for out in outs for row in out], sum(errors), time.perf_counter(),
                 time.process_time() - cpu_at_start))


def _get(queue: Any, procs: Sequence[Any], timeout: float = 300.0) -> Any:
    """The next item of ``queue``; fails at once if a worker process died instead."""
    import queue as queue_module

    deadline = time.monotonic() + timeout
    while True:
        try:
            return queue.get(timeout=0.5)
        except queue_module.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a client process failed (exit codes {dead})") from None
            if time.monotonic() > deadline:
                raise TimeoutError("client processes did not answer in time") from None


def server_files(workdir: Path, devices: list[Device]) -> tuple[Path, Path]:
    """The credentials file (mode 0600) and the registry of ``devices``, in ``workdir``."""
    creds = workdir / "credentials.json"
    keys = {d.key: d.secret for d in devices}
    creds.write_text(json.dumps(keys))
    creds.chmod(0o600)
    fleets: dict[str, list[str]] = {}
    for d in devices:
        fleets.setdefault(d.fleet, []).append(d.name)
    registry = workdir / "registry.json"
    registry.write_text(
        json.dumps({"fleets": [{"name": f, "devices": names} for f, names in fleets.items()]})
    )
    return creds, registry


def _start_server(workdir: Path, devices: list[Device]) -> tuple[subprocess.Popen[str], str]:
    creds, registry = server_files(workdir, devices)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgetelemetry",
            "serve",
            "--store",
            str(workdir / "endpoint.sqlite3"),
            "--credentials-file",
            str(creds),
            "--registry",
            str(registry),
            "--port",
            "0",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line}{proc.communicate()[1]}")
    return proc, line.split("listening on ", 1)[1].strip()


def read_back(path: Path) -> tuple[dict[str, int], int]:
    """Heartbeats stored per device, and the metric values they hold, read through the store."""
    names = [f"latency-ms-{s}" for s in _STATS]
    with open_read_only(path) as store:
        stored = {d.name: store.heartbeat_count(d.name) for d in store.devices()}
        metrics = sum(
            len(store.metric_series(device, model, name))
            for device in stored
            for model, name in [("resnet18", n) for n in names]
            + [(None, "spool-bytes"), (None, "heartbeat-retries")]
        )
    return stored, metrics


def run_load(
    devices: int = 1000,
    rounds: int = 3,
    processes: int = 2,
    threads: int = 4,
    workdir: str | os.PathLike[str] | None = None,
) -> LoadResult:
    """Run the load and read the store back; see the module docstring."""
    fleet_devices = [
        Device(
            f"dev-{i:05d}",
            f"fleet-{i % FLEETS}",
            f"AKIDLOADFLEET{i % FLEETS:03d}",
            f"load-secret-{i % FLEETS}",
        )
        for i in range(devices)
    ]
    with tempfile.TemporaryDirectory(prefix="et-load-", dir=workdir) as tmp:
        work = Path(tmp)
        proc, url = _start_server(work, fleet_devices)
        stderr = ""
        try:
            ctx = multiprocessing.get_context("spawn")
            ready = ctx.Queue()
            start_at = ctx.Event()
            results = ctx.Queue()
            shares = [fleet_devices[k::processes] for k in range(processes)]
            procs = [
                ctx.Process(
                    target=worker, args=(url, share, rounds, threads, ready, start_at, results)
                )
                for share in shares
            ]
            for p in procs:
                p.start()
            for _ in procs:  # every request signed: start together
                _get(ready, procs)
            started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
            start_at.set()
            rows: list[tuple[str, int, float]] = []
            errors = 0
            ended = started
            for _ in procs:
                out, errs, end, _cpu = _get(results, procs)
                rows += out
                errors += errs
                ended = max(ended, end)
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
            seconds = ended - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _, stderr = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
        statuses = Counter(status for _, status, _ in rows)
        acked = Counter(device for device, status, _ in rows if status == 200)
        stored, metrics = read_back(work / "endpoint.sqlite3")
    return LoadResult(
        devices=devices,
        rounds=rounds,
        connections=processes * threads,
        sent=len(rows),
        seconds=seconds,
        statuses=dict(statuses),
        latencies_ms=[ms for _, status, ms in rows if status],
        acked_per_device=dict(acked),
        stored_per_device=stored,
        stored_metrics=metrics,
        transport_errors=errors,
        server_stderr=stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3, help="heartbeats per device")
    p.add_argument("--processes", type=int, default=2, help="client processes")
    p.add_argument("--threads", type=int, default=4, help="connections per client process")
    args = p.parse_args(argv)
    result = run_load(args.devices, args.rounds, args.processes, args.threads)
    print(json.dumps(result.summary(), indent=1))
    return 0 if not result.lost and not result.server_errors else 1


if __name__ == "__main__":
    sys.exit(main())
