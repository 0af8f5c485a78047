"""A real agent process against a real endpoint in this process: kill -9, SIGTERM, exit.

Delivery is keyed on what every window heartbeat carries in its AgentMetrics: ``spool-seq``
(unique per device, never reused by the spool) and ``window-seq`` with the recorder id as its
Dimension (the window's source).  After random SIGKILLs and a final clean run that drains the
spool, every window the child logged as spooled was delivered, each recorder's windows arrived
without a hole, and the duplicates are at most one per kill (the record in flight).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetelemetry.server import EndpointServer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from agent_crash_child import SIGTERM_VALUES

AKID = "AKIDAGENTCRASH01"
SECRET = "agent/crash+secret-0001"
DEVICE = "cam-crash"
FLEET = "fleet-crash"
ROUNDS = 8
BUDGET_S = 20.0


@pytest.fixture(name="server")
def server_fixture() -> Iterator[EndpointServer]:
    srv = EndpointServer(None, credentials={AKID: SECRET})
    srv.store.register_fleet(FLEET)
    srv.store.register_devices(FLEET, [DEVICE])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _env(server: EndpointServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETELEMETRY_")}
    env.update({
        "PYTHONPATH": str(HERE.parent),
        "EDGETELEMETRY_DEVICE_NAME": DEVICE,
        "EDGETELEMETRY_FLEET_NAME": FLEET,
        "EDGETELEMETRY_ENDPOINT_URL": server.url,
        "EDGETELEMETRY_AWS_ACCESS_KEY_ID": AKID,
        "EDGETELEMETRY_AWS_SECRET_ACCESS_KEY": SECRET,
        "EDGETELEMETRY_FSYNC": "never",  # kill -9 keeps written pages; power loss is the spool's
        "EDGETELEMETRY_BACKLOG_RATE": "1000",
        "EDGETELEMETRY_MAX_ATTEMPTS": "1",
        "EDGETELEMETRY_BACKOFF_BASE_S": "0",
        "EDGETELEMETRY_BACKOFF_CAP_S": "0",
        "EDGETELEMETRY_JITTER": "0",
    })
    return env


def _spawn(mode: str, tmp: Path, server: EndpointServer, seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "agent_crash_child.py"), mode, str(tmp / "spool"),
         str(tmp / "spooled.log"), str(seed)],
        stdout=subprocess.PIPE, env=_env(server))


def _wait_for(proc: subprocess.Popen[bytes], word: bytes, timeout: float = 20.0) -> None:
    assert proc.stdout is not None
    fd, buf = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while word + b"\n" not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"child never printed {word!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"child exited early with {proc.wait()}"
            buf += chunk


def test_kill_9_at_random_points_loses_no_spooled_window(tmp_path: Path,
                                                        server: EndpointServer) -> None:
    rng = random.Random(20261126)
    kills = 0
    started = time.monotonic()
    for round_no in range(ROUNDS):
        if time.monotonic() - started > BUDGET_S:
            break
        proc = _spawn("crash", tmp_path, server, round_no)
        try:
            if round_no % 4 == 3:
                time.sleep(rng.uniform(0.05, 0.6))  # whenever: start-up and recovery too
            else:
                _wait_for(proc, b"READY")
                time.sleep(rng.uniform(0.02, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        kills += 1

    proc = _spawn("drain", tmp_path, server, 999)
    _wait_for(proc, b"DONE")
    assert proc.wait(timeout=20) == 0
    assert proc.stdout is not None
    proc.stdout.close()

    store = server.store
    delivered = Counter(int(p.value) for p in store.metric_series(DEVICE, None, "spool-seq"))
    windows = Counter((p.dimension, int(p.value))
                      for p in store.metric_series(DEVICE, None, "window-seq"))
    spooled: dict[int, tuple[str, int]] = {}
    for line in (tmp_path / "spooled.log").read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "A":  # the last line of a run may be torn
            spooled[int(parts[1])] = (parts[2], int(parts[3]))
    assert len(spooled) > 20, "the child hardly ran: the test proves nothing"
    missing = sorted(set(spooled) - set(delivered))
    assert not missing, f"spooled but never delivered: {missing}"
    assert all(windows[w] >= 1 for w in spooled.values())
    duplicates = sum(n - 1 for n in delivered.values())
    assert duplicates <= kills, (duplicates, kills)
    assert sum(n - 1 for n in windows.values()) == duplicates
    # Each recorder (one per process) delivered windows 0..k without a hole: a kill loses at
    # most the window still open in memory, never one in the middle.
    by_recorder: dict[str, set[int]] = {}
    for rid, wseq in windows:
        by_recorder.setdefault(rid, set()).add(wseq)
    assert len(by_recorder) >= 2
    for rid, seqs in by_recorder.items():
        assert seqs == set(range(max(seqs) + 1)), (rid, sorted(seqs))
    assert all(t >= 1577836800 for t in (p.timestamp for p in
                                         store.metric_series(DEVICE, None, "spool-seq")))


def test_sigterm_flushes_the_current_window(tmp_path: Path, server: EndpointServer) -> None:
    proc = _spawn("sigterm", tmp_path, server, 1)
    try:
        _wait_for(proc, b"READY")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM  # the default handler ran after ours
        assert time.monotonic() - t0 < 3.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    counts = server.store.metric_series(DEVICE, "resnet18", "latency-ms-count")
    assert sum(p.value for p in counts) == SIGTERM_VALUES


def test_interpreter_exit_flushes_the_current_window(tmp_path: Path,
                                                     server: EndpointServer) -> None:
    proc = _spawn("exit", tmp_path, server, 2)
    try:
        _wait_for(proc, b"READY")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    counts = server.store.metric_series(DEVICE, "resnet18", "latency-ms-count")
    assert sum(p.value for p in counts) == SIGTERM_VALUES
