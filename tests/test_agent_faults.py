"""Failures at run time (issue 12, items 5 and 6), against a real endpoint and real disks.

- A spool made read-only mid-run (``chattr +i``: reversible, so recovery is tested too; and an
  ext4 disk the kernel remounts read-only after an error): ``tick()`` and ``stats()`` never
  raise, the fault is reported (``TickResult.spool_error``, the ``spool-faulted`` /
  ``spool-write-failures`` AgentMetrics, one WARNING line), windows are kept in memory and
  delivered once the disk is writable again (INFO when it recovers); ``close()`` at interpreter
  exit prints no traceback.
- A failure to deliver (no credentials, a signature for the wrong region, an unregistered
  device, an endpoint that is not there) is logged at WARNING the first time, with what to
  check and no secret, then at DEBUG while it lasts; recovery is logged at INFO.  The README's
  Heartbeats snippet, run as it is, says why nothing arrived.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from endpoint_helpers import running_endpoint
from fs_helpers import ROOT, ext4_image, immutable

from edgetelemetry import Recorder
from edgetelemetry.agent import Agent
from edgetelemetry.server import EndpointServer

AKID = "AKIDFAULTTEST001"
SECRET = "fault/test+secret-0001"
DEVICE = "cam-1"
FLEET = "fleet-a"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("EDGETELEMETRY_", "AWS_")):
            monkeypatch.delenv(name)


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[EndpointServer]:
    with running_endpoint(tmp_path / "store.sqlite3", AKID, SECRET, FLEET, [DEVICE]) as srv:
        yield srv


def make_agent(spool_dir: Path, url: str, rec: Recorder, **kw: Any) -> Agent:
    settings: dict[str, Any] = dict(
        device_name=DEVICE, fleet=FLEET, endpoint_url=url, spool_dir=spool_dir,
        aws_access_key_id=AKID, aws_secret_access_key=SECRET, fsync="never",
        backlog_rate=1000, jitter=0, max_attempts=1, backoff_base_s=0, backoff_cap_s=0,
        connect_timeout_s=1, read_timeout_s=2, send_backoff_cap_s=0,
    )
    settings.update(kw)
    return Agent(rec, **settings)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("edgetelemetry")]


def stored_count(server: EndpointServer) -> float:
    return sum(p.value for p in server.store.metric_series(DEVICE, "resnet18",
                                                           "latency-ms-count"))


# -- item 5: the spool's disk fails mid-run ----------------------------------------------------


def test_a_spool_made_read_only_mid_run_is_reported_and_recovers(
        tmp_path: Path, server: EndpointServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgetelemetry")
    spool = tmp_path / "spool"
    with Recorder() as rec, make_agent(spool, server.url, rec) as agent, \
            immutable(spool) as read_only:  # the spool only: the store's mmap must stay
        lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        lat.record_many([1.0] * 3)
        assert agent.tick().failure is None
        assert agent.stats()["spool-faulted"] == 0
        caplog.clear()

        read_only(True)
        for i in range(3):
            lat.record_many([2.0] * 5)
            result = agent.tick()  # never raises
            assert result.spool_error is not None and "Operation not permitted" in \
                result.spool_error, result
            stats = agent.stats()  # never raises
            assert stats["spool-faulted"] == 1 and stats["spool-write-failures"] >= i + 1
            assert stats["spool-append-failures"] == i + 1
        warned = warnings_of(caplog)
        assert len(warned) == 1, warned
        assert "permission denied" in warned[0] and str(spool) in warned[0]
        assert stored_count(server) == 3  # the three windows are in memory, merged

        read_only(False)
        lat.record_many([3.0] * 2)
        result = agent.tick()
        assert result.spool_error is None and result.failure is None
        assert agent.stats()["spool-faulted"] == 0
        assert stored_count(server) == 3 + 15 + 2  # nothing recorded was lost
        assert any("recovered" in r.getMessage() and r.levelno == logging.INFO
                   for r in caplog.records)
        assert len(warnings_of(caplog)) == 1


_EXIT_ON_A_READ_ONLY_SPOOL = """
import sys
from edgetelemetry import Recorder
from edgetelemetry.agent import Agent
rec = Recorder()
agent = Agent(rec, spool_dir=sys.argv[1], device_name="cam-1", fleet="fleet-a",
              endpoint_url=sys.argv[2], aws_access_key_id="AKIDFAULTTEST001",
              aws_secret_access_key="fault/test+secret-0001", fsync="never", max_attempts=1)
lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
lat.record(1.0)
agent.tick()
print("READY", flush=True)
sys.stdin.readline()      # the parent makes the spool read-only meanwhile
lat.record(2.0)
agent.tick()
print("stats", agent.stats()["spool-faulted"], flush=True)
sys.exit(0)               # no close(): the atexit hook closes the agent
"""


def test_close_at_exit_on_a_read_only_spool_prints_no_traceback(
        tmp_path: Path, server: EndpointServer) -> None:
    with ext4_image(tmp_path / "disk") as disk:
        proc = subprocess.Popen(
            [sys.executable, "-c", _EXIT_ON_A_READ_ONLY_SPOOL, str(disk.path / "spool"),
             server.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "READY"
            disk.fail()  # the kernel remounts it read-only, as for a failing disk
            out, err = proc.communicate("go\n", timeout=30)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, err
    assert "stats 1" in out
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Read-only file system" in lines[0], err


# -- item 6: failures to deliver are said once, without secrets --------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CASES = {
    # case: (agent settings, words the WARNING must hold)
    "no credentials": ({"aws_access_key_id": None, "aws_secret_access_key": None,
                        "credentials_source": "default"},
                       ["no credentials", "aws_access_key_id"]),
    "wrong region": ({"region": "eu-west-1"},
                     ["signature refused", "region eu-west-1", "us-east-1"]),
    "unregistered device": ({"device_name": "cam-unknown"},
                            ["request refused", "not registered", "register"]),
    "endpoint unreachable": ({"endpoint_url": "closed"}, ["endpoint unreachable"]),
}


def _case_settings(case: str, url: str) -> dict[str, Any]:
    settings = {k: v for k, v in CASES[case][0].items() if v is not None}
    if settings.get("endpoint_url") == "closed":
        settings["endpoint_url"] = f"http://127.0.0.1:{_closed_port()}"
    return settings


@pytest.fixture(name="no_aws_chain")
def no_aws_chain_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """boto3's default chain finds nothing: no files, no variables, no instance metadata."""
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_class_of_delivery_failure_is_warned_once(
        case: str, tmp_path: Path, server: EndpointServer, no_aws_chain: None,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgetelemetry")
    kw = {"aws_access_key_id": AKID, "aws_secret_access_key": SECRET}
    kw.update(_case_settings(case, server.url))
    for key in ("aws_access_key_id", "aws_secret_access_key"):
        if CASES[case][0].get(key, "") is None:
            kw.pop(key)
    with Recorder() as rec, make_agent(tmp_path / "spool", server.url, rec, **kw) as agent:
        lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        for _ in range(3):
            lat.record(1.0)
            assert agent.tick().failure is not None or case == "unregistered device"
    warned = warnings_of(caplog)
    assert len(warned) == 1, warned
    for words in CASES[case][1]:
        assert words in warned[0], (words, warned[0])
    assert any(r.levelno == logging.DEBUG and "still failing" in r.getMessage()
               for r in caplog.records)
    assert SECRET not in caplog.text


def test_recovery_is_logged_at_info(tmp_path: Path, server: EndpointServer,
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgetelemetry")
    with Recorder() as rec, make_agent(tmp_path / "spool", server.url, rec,
                                       device_name="cam-late") as agent:
        agent.tick()
        server.store.register_devices(FLEET, ["cam-late"])
        assert agent.tick().failure is None
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO
             and "recovered" in r.getMessage()]
    assert len(infos) == 1 and "request refused" in infos[0], infos
    assert len(warnings_of(caplog)) == 1


_README_SNIPPET = """
import edgetelemetry as et
with et.Recorder() as rec, et.Agent(rec, device_name=DEVICE, fleet="fleet-a",
                                    endpoint_url=URL, region=REGION, interval=60,
                                    spool_dir=SPOOL) as agent:
    agent.start()
    rec.histogram("latency", unit="ms", model="resnet18", version="1.0").record(3.2)
"""


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_readme_snippet_says_why_nothing_arrived(
        case: str, tmp_path: Path, server: EndpointServer) -> None:
    settings = _case_settings(case, server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EDGETELEMETRY_"))}
    env.update({"PYTHONPATH": str(ROOT), "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                "AWS_CONFIG_FILE": str(tmp_path / "none")})
    if case != "no credentials":
        env.update({"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET})
    code = (f"DEVICE = {settings.get('device_name', DEVICE)!r}\n"
            f"URL = {settings.get('endpoint_url', server.url)!r}\n"
            f"REGION = {settings.get('region', 'us-east-1')!r}\n"
            f"SPOOL = {str(tmp_path / 'spool')!r}\n" + _README_SNIPPET)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert CASES[case][1][0] in done.stderr, done.stderr  # stdlib logging's last resort
    assert SECRET not in done.stderr
