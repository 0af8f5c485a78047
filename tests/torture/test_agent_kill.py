"""``kill -9`` an agent at random points against the real endpoint, then account for every value.

The endpoint is ``edgetelemetry serve`` (the command, in its own process, SQLite on disk) on
loopback.  Each run starts an agent process (``agent_kill_child.py``) that records batches and
ticks as fast as it can, and kills it with SIGKILL after a random delay, sometimes during its
start-up and recovery.  A last clean run drains the spool.  Then the store is read and:

- **exact accounting**: every window of every run is stored with exactly the values its
  batches held (``latency-ms-count``), except the window that was open when the process died
  (values recorded after its last snapshot, or a snapshot not yet spooled): that one may be
  missing, and is the only loss allowed;
- **duplicates stored: 0**: no ``spool-seq`` key (``<spool id>/<part>/<parts>``, seq) and no
  window (recorder id, window seq) is stored twice.  A record sent and not yet acknowledged
  when the agent died is sent again (docs/agent.md): the endpoint must drop the resend, by
  the store's unique resend key (issue 12 item 3, docs/store.md);
- **crashed: 0**: no child exited on its own, and the drain ended cleanly.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgetelemetry.server.store.codec import decode_points

from .conftest import torture_size

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent
AKID, SECRET = "AKIDTORTUREKILL1", "torture/kill+secret-0001"
DEVICE, FLEET = "cam-kill", "fleet-kill"


@pytest.fixture(name="endpoint")
def endpoint_fixture(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``edgetelemetry serve`` on a free loopback port; yields (url, store path)."""
    keys, registry = tmp_path / "keys.json", tmp_path / "registry.json"
    keys.write_text(json.dumps({AKID: SECRET}))
    keys.chmod(0o600)
    registry.write_text(json.dumps({"fleets": [{"name": FLEET, "devices": [DEVICE]}]}))
    store = tmp_path / "store.sqlite3"
    proc = subprocess.Popen(
        [str(BIN / "edgetelemetry"), "serve", "--store", str(store), "--credentials-file",
         str(keys), "--registry", str(registry), "--port", "0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline().decode()
        assert "listening on" in line, line
        yield line.split("listening on ", 1)[1].strip(), store
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stdout.close()


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGETELEMETRY_", "AWS_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "EDGETELEMETRY_DEVICE_NAME": DEVICE, "EDGETELEMETRY_FLEET_NAME": FLEET,
        "EDGETELEMETRY_ENDPOINT_URL": url,
        "EDGETELEMETRY_AWS_ACCESS_KEY_ID": AKID, "EDGETELEMETRY_AWS_SECRET_ACCESS_KEY": SECRET,
        "EDGETELEMETRY_FSYNC": "never",  # kill -9 keeps the page cache; power loss is not this
        "EDGETELEMETRY_BACKLOG_RATE": "1000", "EDGETELEMETRY_MAX_ATTEMPTS": "1",
        "EDGETELEMETRY_BACKOFF_BASE_S": "0", "EDGETELEMETRY_BACKOFF_CAP_S": "0",
        "EDGETELEMETRY_JITTER": "0",
    })
    return env


def _spawn(mode: str, tmp: Path, url: str, seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "agent_kill_child.py"), mode, str(tmp / "spool"),
         str(tmp / f"run-{seed:03d}.log"), str(seed)], stdout=subprocess.PIPE, env=_env(url))


def _wait_for(proc: subprocess.Popen[bytes], word: bytes, timeout: float) -> bool:
    assert proc.stdout is not None
    fd, buf = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while word + b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        buf += chunk
    return True


def _windows_recorded(log: Path) -> tuple[str | None, list[int]]:
    """(recorder id, values per window) from a child's log; the last window is the open one."""
    rid, windows = None, [0]
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "W":
            rid = parts[1]
        elif len(parts) == 2 and parts[0] == "R" and parts[1].isdigit():
            windows[-1] += int(parts[1])
        elif parts == ["T"]:
            windows.append(0)
    return rid, windows


def _stored(store: Path) -> tuple[Counter[tuple[str, int]], dict[tuple[str, int], float],
                                  Counter[tuple[str, float]]]:
    """Per window (recorder id, window seq): how often stored and the values stored for it;
    per spool-seq key (Dimension, Value): how often stored.  Read from the store's own tables
    (docs/store.md: a heartbeat's points refer to its device's numbered series)."""
    seen: Counter[tuple[str, int]] = Counter()
    values: dict[tuple[str, int], float] = {}
    keys: Counter[tuple[str, float]] = Counter()
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        (device_id,) = db.execute("SELECT id FROM devices WHERE name = ?", (DEVICE,)).fetchone()
        series = {number: (metric, dimension) for number, metric, dimension in db.execute(
            "SELECT number, metric, dimension FROM series WHERE device_id = ?", (device_id,))}
        heartbeats = db.execute("SELECT ts, points FROM heartbeats WHERE device_id = ? "
                                "ORDER BY number", (device_id,)).fetchall()
    for ts, blob in heartbeats:
        window, count = None, 0.0
        for number, value, _ in decode_points(blob, ts):
            metric, dimension = series[number]
            if value is None:
                continue
            if metric == "window-seq":
                window = (dimension, int(value))
            elif metric == "latency-ms-count":
                count += value
            elif metric == "spool-seq":
                keys[(dimension, value)] += 1
        if window is not None:
            seen[window] += 1
            values[window] = values.get(window, 0.0) + count
    return seen, values, keys


def test_kill_9_at_random_points_loses_only_the_open_window_and_stores_no_duplicate(
        tmp_path: Path, endpoint: tuple[str, Path],
        torture_report: Callable[..., None]) -> None:
    url, store = endpoint
    runs = torture_size(ci=32, full=300)
    rng = random.Random(20261203)
    crashed = 0
    for run in range(runs):
        proc = _spawn("crash", tmp_path, url, run)
        try:
            if run % 5 == 4:  # whenever: start-up and recovery of the last run's spool too
                time.sleep(rng.uniform(0.05, 1.0))
            elif _wait_for(proc, b"READY", 30):
                time.sleep(rng.uniform(0.02, 0.5))
            if proc.poll() is not None:
                crashed += 1  # it ended on its own: an agent that falls over
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    drain = _spawn("drain", tmp_path, url, 999)
    if not _wait_for(drain, b"DONE", 120) or drain.wait(timeout=30) != 0:
        crashed += 1
    assert drain.stdout is not None
    drain.stdout.close()

    seen, values, keys = _stored(store)
    total = lost = wrong = 0
    checked_runs = 0
    for run in range(runs):
        log = tmp_path / f"run-{run:03d}.log"
        if not log.exists():
            continue  # killed before its agent was up: nothing recorded
        rid, windows = _windows_recorded(log)
        if rid is None:
            continue
        checked_runs += 1
        for wseq, n in enumerate(windows):
            total += n
            stored = values.get((rid, wseq))
            if stored is None:
                if wseq == len(windows) - 1:
                    lost += n  # the window open when the process died: the loss allowed
                else:
                    wrong += 1  # a closed window never stored
            elif stored / seen[(rid, wseq)] != n:
                wrong += 1  # stored with other values than its batches held
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    duplicated_keys = sum(n - 1 for n in keys.values() if n > 1)
    torture_report(tries=runs, windows=len(seen), values=total, lost=lost,
                   duplicated=duplicated_keys, duplicated_windows=duplicated, crashed=crashed,
                   wrong_windows=wrong)
    assert checked_runs >= runs // 2, "most children died before recording: it proves little"
    assert total > 0 and len(seen) > runs
    assert crashed == 0
    assert wrong == 0, f"{wrong} closed windows lost or stored with other values"
    assert duplicated_keys == 0 and duplicated == 0, (
        f"{duplicated_keys} spool-seq keys and {duplicated} windows stored more than once: the "
        "endpoint must drop a resend by its spool-seq key (issue 12 item 3)")
