"""Stateless replicas (issue 15 item 3): two ``serve --workers 2`` processes on two loopback
ports behind the shipped nginx front, sharing one real PostgreSQL.  10,000 simulated devices
send through the balancer while one replica is ``kill -9``ed (master and workers at once) and
started again; every heartbeat answered 200 is in the store exactly once.

A device retries what got no 200 (a reset, nginx's 502 for the replica that died mid-request),
as the agent does; each heartbeat carries the agent's ``spool-seq`` key, so a retry of a
heartbeat that was stored before its answer was lost is recognised by the store's unique
``(device, spool-seq)`` constraint and not stored again (docs/store.md).  The database is a
fresh one of the test PostgreSQL server (``postgresql_url``, tests/realservices.py), its schema
applied by ``edgetelemetry store migrate`` as an operator would before starting replicas.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from conftest_server import AKID, FLEET, REGION, SECRET
from nginx_front import start_front
from realservices import free_port
from serve_procs import ServeProcess, serve_env

from edgetelemetry.server.store import open_store

DEVICES = 10_000
THREADS = 16
ATTEMPTS = 8


def heartbeat_for(device: str, spool_id: str, now: int) -> bytes:
    return json.dumps({
        "AgentVersion": "1.0",
        "DeviceName": device,
        "DeviceFleetName": FLEET,
        "AgentMetrics": [
            {"MetricName": "spool-seq", "Dimension": f"{spool_id}/1/1", "Value": 1.0,
             "Timestamp": now},
        ],
        "Models": [{
            "ModelName": "resnet18", "ModelVersion": "1.0", "LatestInference": now,
            "ModelMetrics": [{"MetricName": "latency-ms-p99", "Value": 12.5, "Timestamp": now,
                              "Dimension": "all"}],
        }],
    }).encode()


def signed(url: str, body: bytes) -> dict[str, str]:
    host = url.split("//", 1)[1]
    request = AWSRequest(method="POST", url=f"{url}/SendHeartbeat", data=body)
    request.headers["Host"] = host
    request.headers["Content-Type"] = "application/json"
    SigV4Auth(Credentials(AKID, SECRET), "sagemaker", REGION).add_auth(request)
    return dict(request.headers.items())


class Devices:
    """Threads sending one heartbeat per device through the front, retrying until a 200."""

    def __init__(self, url: str, names: list[str]) -> None:
        self.url = url
        self.names = names
        self.acked: set[str] = set()
        self.retries = 0
        self.gave_up: list[str] = []
        self.statuses: dict[int, int] = {}
        self._lock = threading.Lock()

    def run(self) -> None:
        shares = [self.names[k::THREADS] for k in range(THREADS)]
        threads = [threading.Thread(target=self._send_all, args=(s,)) for s in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _send_all(self, names: list[str]) -> None:
        host, port = self.url.split("//", 1)[1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        now = int(time.time())
        for name in names:
            body = heartbeat_for(name, uuid.uuid5(uuid.NAMESPACE_DNS, name).hex, now)
            headers = signed(self.url, body)
            for _ in range(ATTEMPTS):
                status = 0
                try:
                    conn.request("POST", "/SendHeartbeat", body=body, headers=headers)
                    answer = conn.getresponse()
                    answer.read()
                    status = answer.status
                    if answer.will_close:
                        conn.close()
                except (OSError, http.client.HTTPException):
                    conn.close()
                with self._lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 200:
                    with self._lock:
                        self.acked.add(name)
                    break
                assert status in (0, 502, 503, 504), f"{name}: answered {status}"
                with self._lock:
                    self.retries += 1
                time.sleep(0.2)
            else:
                with self._lock:
                    self.gave_up.append(name)
        conn.close()


def test_replicas_behind_nginx_lose_nothing_and_store_nothing_twice(
    tmp_path: Path, postgresql_url: str
) -> None:
    names = [f"dev-{i:05d}" for i in range(DEVICES)]
    migrate = subprocess.run(
        [sys.executable, "-m", "edgetelemetry", "store", "migrate", "--store", postgresql_url],
        capture_output=True, text=True, timeout=120, env=serve_env(),
    )
    assert migrate.returncode == 0, migrate.stderr.strip()[-500:]
    assert "schema version" in migrate.stdout, migrate.stdout
    with contextlib.ExitStack() as stack:
        ports = [free_port(), free_port()]
        replicas = [
            stack.enter_context(ServeProcess(
                tmp_path / f"replica-{k}", "--workers", "2", "--behind-proxy",
                "--log-level", "WARNING", store=postgresql_url, port=port, devices=names,
                registry=(k == 0),
            ))
            for k, port in enumerate(ports)
        ]
        front = start_front(stack, [f"127.0.0.1:{p}" for p in ports])
        devices = Devices(front.url, names)
        sender = threading.Thread(target=devices.run)
        sender.start()
        while len(devices.acked) < DEVICES // 3 and sender.is_alive():
            time.sleep(0.05)
        killed_at = len(devices.acked)
        replicas[0].kill()
        time.sleep(1.0)
        replicas[0] = stack.enter_context(ServeProcess(
            tmp_path / "replica-0-again", "--workers", "2", "--behind-proxy",
            "--log-level", "WARNING", store=postgresql_url, port=ports[0], registry=False,
        ))
        sender.join(600)
        assert not sender.is_alive()
        logs = [r.log() for r in replicas]
    summary = {"acked": len(devices.acked), "killed_at": killed_at, "retries": devices.retries,
               "gave_up": len(devices.gave_up), "statuses": devices.statuses}
    print("replicas:", summary)
    assert devices.gave_up == [], summary
    assert len(devices.acked) == DEVICES, summary
    assert killed_at < DEVICES, summary  # the kill happened while devices were sending
    with open_store(postgresql_url) as store:
        counts = {name: store.heartbeat_count(name) for name in names}
    twice = sorted(n for n, c in counts.items() if c > 1)
    missing = sorted(n for n in devices.acked if counts[n] == 0)
    assert missing == [], (len(missing), missing[:5], summary)
    assert twice == [], (len(twice), twice[:5], summary)
    for log in logs:
        assert "Traceback" not in log, log[-3000:]

