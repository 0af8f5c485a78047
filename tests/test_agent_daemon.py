"""``edgetelemetry agent``: the device agent as the process systemd runs.

Real processes: the daemon (``python -m edgetelemetry agent``), producers that attach to its
segment, a real endpoint (``EndpointServer``: SigV4, SQLite) whose store is read back.
systemd's side is played by the test: ``NOTIFY_SOCKET`` is a datagram socket it reads,
``JOURNAL_STREAM`` is set so the log lines carry their priority.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stored_rows import stored_rows
from test_agent import AKID, DEVICE, FLEET, SECRET, server_fixture  # noqa: F401

import edgetelemetry as et
from edgetelemetry.agent.daemon import EXIT_CONFIG
from edgetelemetry.server import EndpointServer

MODEL = "resnet18"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EDGETELEMETRY_", "NOTIFY_SOCKET", "JOURNAL_STREAM"))}
    env.update(extra)
    return env


class Daemon:
    """One ``edgetelemetry agent`` process; stderr in ``log``."""

    def __init__(self, work: Path, url: str, env: dict[str, str] | None = None,
                 **settings: Any) -> None:
        self.work = work
        self.config = work / "agent.json"
        self.settings: dict[str, Any] = {
            "device_name": DEVICE, "fleet_name": FLEET, "endpoint_url": url,
            "aws_access_key_id": AKID, "aws_secret_access_key": SECRET,
            "interval_s": 1, "jitter": 0, "fsync": "never", "spool_dir": "spool",
            "segment_path": "run/recorder", "max_attempts": 1, "backoff_base_s": 0,
            "backoff_cap_s": 0, "connect_timeout_s": 2, "read_timeout_s": 2, **settings}
        self.write()
        self.segment = str(work / "run" / "recorder")
        self.log = work / "agent.log"
        self.env = _env(**(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None

    def write(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.config.write_text(json.dumps(self.settings))
        self.config.chmod(0o600)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgetelemetry", "agent", "--config", str(self.config),
                 *args], stdout=out, stderr=subprocess.STDOUT, env=self.env)
        return self.proc

    def wait_for(self, text: str, times: int = 1, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(text) < times:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited {self.proc.returncode}:\n{self.text()}")
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.text()}"
            time.sleep(0.05)

    def started(self) -> Daemon:
        ready = self.text().count("ready: segment")
        self.start()
        self.wait_for("ready: segment", ready + 1)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture(name="daemons")
def daemons_fixture() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def produce(path: str, n: int, model: str = MODEL) -> None:
    """Attach in another process and record n values of 1.0."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import edgetelemetry as et
        rec = et.Recorder.attach({path!r})
        h = rec.histogram("latency", unit="ms", model={model!r}, version="1.0")
        for _ in range({n}):
            h.record(1.0)
        rec.close()
        """)], capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr


def stored_count(store: str, model: str = MODEL) -> int:
    return int(sum(r.value or 0 for r in stored_rows(store)
                   if r.model == model and r.metric == "latency-ms-count"))


def agent_metric(store: str, name: str) -> list[float]:
    return [r.value for r in stored_rows(store)
            if r.model is None and r.metric == name and r.value is not None]


def wait_stored(store: str, want: int, model: str = MODEL, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (got := stored_count(store, model)) < want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def test_check_and_configurations_that_cannot_work(tmp_path: Path, daemons) -> None:
    d = Daemon(tmp_path, "http://127.0.0.1:9")
    daemons.append(d)
    done = subprocess.run([sys.executable, "-m", "edgetelemetry", "agent", "--config",
                           str(d.config), "--check"], capture_output=True, text=True,
                          env=d.env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"segment {d.segment} (mode 0660" in done.stdout
    for changes, words in (({"segment_mode": "0666"}, "segment_mode"),
                           ({"segment_group": "no-such-group-here"}, "groupadd"),
                           ({"ring_capacity": 1000}, "power of two")):
        d.write(**changes)
        done = subprocess.run([sys.executable, "-m", "edgetelemetry", "agent", "--config",
                               str(d.config)], capture_output=True, text=True, env=d.env,
                              timeout=60)
        assert done.returncode == EXIT_CONFIG, (changes, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "CRITICAL" in lines[0], lines
        d.settings.update({"segment_mode": "0660", "ring_capacity": 2048})
        d.settings.pop("segment_group", None)
    assert not os.path.exists(d.segment)


def test_ready_producers_delivered_sigterm_flushes_and_exits_0(
        tmp_path: Path, server: EndpointServer, daemons) -> None:
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(120)
    d = Daemon(tmp_path, server.url, env={"NOTIFY_SOCKET": notify_path,
                                          "JOURNAL_STREAM": "8:12345"})
    daemons.append(d)
    d.started()
    assert notify.recv(4096).decode().startswith("READY=1\nSTATUS=0 of 64 process slots")
    assert oct(os.stat(d.segment).st_mode & 0o777) == "0o660"
    assert oct(os.stat(os.path.dirname(d.segment)).st_mode & 0o777) == "0o750"
    produce(d.segment, 2500)
    produce(d.segment, 1500)
    assert wait_stored(server.store.path, 4000) == 4000
    produce(d.segment, 7)  # recorded just before the stop: the last window has it
    assert d.stop() == 0
    messages = []
    while True:
        messages.append(notify.recv(4096).decode())
        if messages[-1] == "STOPPING=1":
            break
    notify.close()
    assert stored_count(server.store.path) == 4007
    lines = d.text().splitlines()
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>", "<7>") for line in lines), lines
    assert any(line.startswith("<6>edgetelemetry.agent.daemon: ready: segment")
               or "INFO edgetelemetry.agent.daemon: ready" in line for line in lines)
    assert os.path.exists(d.segment)  # left for the next agent
    assert agent_metric(server.store.path, "process-attaches")[-1] == 3


def test_sighup_reloads_what_it_can_and_says_what_needs_a_restart(
        tmp_path: Path, server: EndpointServer, daemons) -> None:
    d = Daemon(tmp_path, server.url)
    daemons.append(d)
    d.started()
    produce(d.segment, 100)
    d.write(interval_s=2, segment_mode="0600")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("reloaded: interval_s")
    assert "segment_mode change only with a restart" in d.text()
    assert oct(os.stat(d.segment).st_mode & 0o777) == "0o660"
    d.write(interval_s="soon")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("reload refused, the running configuration stays")
    produce(d.segment, 50)
    assert wait_stored(server.store.path, 150) == 150
    assert d.stop() == 0
    assert stored_count(server.store.path) == 150


def test_kill_9_and_restarts_lose_nothing_and_spool_no_window_twice(
        tmp_path: Path, server: EndpointServer, daemons) -> None:
    d = Daemon(tmp_path, server.url)
    daemons.append(d)
    d.started()
    total = 400_000
    producer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time, edgetelemetry as et
        rec = et.Recorder.attach({d.segment!r})
        h = rec.histogram("latency", unit="ms", model={MODEL!r}, version="1.0")
        for burst in range(200):
            for _ in range({total} // 200):
                h.record(1.0)
            time.sleep(0.03)
        rec.close()
        """)], env=_env())
    rng = random.Random(7)
    for _ in range(3):  # the agent dies anywhere, a new one takes over while they record
        time.sleep(rng.uniform(0.3, 1.5))
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        d.started()
    assert producer.wait(timeout=120) == 0
    wait_stored(server.store.path, total)
    assert d.stop() == 0
    assert "window 0 pending" in d.text() or "no window pending" in d.text()
    # each window is in one spool record; a record resent after a kill (an agent killed while
    # sending: the endpoint deduplicates those once issue 12 lands) is counted once here
    beats: dict[tuple[int, int], dict[str, Any]] = defaultdict(dict)
    for r in stored_rows(server.store.path):
        beats[r.heartbeat][r.metric] = (r.dimension, r.value)
    records_of: dict[tuple[str, float | None], set[float | None]] = defaultdict(set)
    count_of: dict[float | None, float] = {}
    for beat in beats.values():
        if "window-seq" not in beat:
            continue
        segment, window = beat["window-seq"]
        spool_seq = beat["spool-seq"][1]
        records_of[(segment, window)].add(spool_seq)
        count_of[spool_seq] = beat.get("latency-ms-count", ("", 0))[1] or 0
    assert all(len(seqs) == 1 for seqs in records_of.values()), records_of
    assert sum(count_of.values()) == total


def test_a_full_process_table_is_reported_and_the_others_are_served(
        tmp_path: Path, server: EndpointServer, daemons) -> None:
    d = Daemon(tmp_path, server.url, max_processes=1)
    daemons.append(d)
    d.started()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, edgetelemetry as et
        rec = et.Recorder.attach({d.segment!r})
        h = rec.histogram("latency", unit="ms", model={MODEL!r}, version="1.0")
        for _ in range(900):
            h.record(1.0)
        print("attached", flush=True)
        sys.stdin.readline()
        rec.close()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    assert holder.stdout is not None and holder.stdout.readline().strip() == "attached"
    with pytest.raises(et.ProcessTableFullError, match="raise max_processes"):
        et.Recorder.attach(d.segment)
    assert wait_stored(server.store.path, 900) == 900  # the agent serves the one attached
    deadline = time.monotonic() + 30
    while not any(agent_metric(server.store.path, "attach-refusals")):
        assert time.monotonic() < deadline, "attach-refusals never reported"
        time.sleep(0.2)
    holder.communicate("\n", timeout=30)
    assert d.stop() == 0


def test_a_segment_truncated_under_the_agent_is_replaced_and_reported(
        tmp_path: Path, server: EndpointServer, daemons) -> None:
    d = Daemon(tmp_path, server.url)
    daemons.append(d)
    d.started()
    produce(d.segment, 100, model="before-cut")
    assert wait_stored(server.store.path, 100, "before-cut") == 100
    os.truncate(d.segment, 4096)  # someone with write access shrinks the file
    d.wait_for("was truncated under the agent")
    d.wait_for("shared recorder " + d.segment + ": segment", 2)  # a fresh one
    assert os.path.getsize(d.segment) > 4096
    produce(d.segment, 60, model="after-cut")  # producers attach again
    assert wait_stored(server.store.path, 60, "after-cut") == 60
    deadline = time.monotonic() + 30
    while 1.0 not in agent_metric(server.store.path, "segment-truncations"):
        assert time.monotonic() < deadline, "segment-truncations never reported"
        time.sleep(0.2)
    assert d.stop() == 0
    lines = [line for line in d.text().splitlines() if "was truncated" in line]
    assert lines and all(" ERROR " in line for line in lines), lines


def test_a_segment_of_other_sizes_is_refused_or_drained_and_replaced(
        tmp_path: Path, server: EndpointServer, daemons) -> None:
    d = Daemon(tmp_path, server.url)
    daemons.append(d)
    d.started()
    assert d.stop() == 0
    produce(d.segment, 321, model="old-sizes")  # recorded while no agent runs
    d.write(max_series=512)
    d.start()
    assert d.proc is not None and d.proc.wait(timeout=120) == EXIT_CONFIG
    assert "exists with another configuration" in d.text() and "segment_replace" in d.text()
    d.write(segment_replace=True)
    d.started()
    assert wait_stored(server.store.path, 321, "old-sizes") == 321  # spooled, then replaced
    produce(d.segment, 5, model="new-sizes")
    assert wait_stored(server.store.path, 5, "new-sizes") == 5
    assert d.stop() == 0
    # and a second agent on a live one is refused with who holds it
    first = d.started()
    (tmp_path / "second").mkdir()
    second = Daemon(tmp_path / "second", server.url)
    second.write(segment_path=d.segment, spool_dir=str(tmp_path / "spool2"))
    assert second.start().wait(timeout=120) == 1
    assert f"another agent (pid {first.proc.pid if first.proc else 0})" in second.text()
    assert first.stop() == 0
