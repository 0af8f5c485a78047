"""A full disk under a running agent: the spool on a small tmpfs, filled to the last byte and
freed again, over and over, while the agent records, ticks and sends to a real endpoint.

Nothing may raise into the caller (``tick()``, ``stats()``, ``close()``); the fault shows in
``spool-faulted`` while the disk is full; windows that could not be spooled stay in memory
and go out once it has room; at the end every recorded value is stored exactly once.  Needs
``mount`` (root): skipped, saying so, where the machine does not allow it.
"""

from __future__ import annotations

import errno
import logging
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgetelemetry import Recorder
from edgetelemetry.agent import Agent
from edgetelemetry.server import EndpointServer

from .conftest import torture_size

AKID, SECRET = "AKIDTORTUREFULL1", "torture/full+secret-0001"
DEVICE, FLEET = "cam-full", "fleet-full"


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[EndpointServer]:
    from endpoint_helpers import running_endpoint

    with running_endpoint(tmp_path / "store.sqlite3", AKID, SECRET, FLEET, [DEVICE]) as srv:
        yield srv


def _fill(path: Path) -> None:
    """Write until the file system says ENOSPC."""
    chunk = b"\xff" * 65536
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]


def test_a_disk_filled_and_freed_under_a_running_agent_loses_nothing(
        tmp_path: Path, server: EndpointServer, torture_report: Callable[..., None],
        caplog: pytest.LogCaptureFixture) -> None:
    from fs_helpers import tmpfs

    caplog.set_level(logging.WARNING, logger="edgetelemetry")
    tries = torture_size(ci=12, full=200)
    rng = random.Random(20261203)
    recorded = crashed = faulted = 0
    with tmpfs(tmp_path / "disk", size="1m") as fs, Recorder() as rec:
        lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        agent = Agent(rec, device_name=DEVICE, fleet=FLEET, endpoint_url=server.url,
                      spool_dir=fs.path / "spool", aws_access_key_id=AKID,
                      aws_secret_access_key=SECRET, fsync=rng.choice(["always", "never"]),
                      max_attempts=1, jitter=0, backoff_base_s=0, backoff_cap_s=0,
                      send_backoff_cap_s=0, backlog_rate=1000, spool_max_bytes=65536)
        filler = fs.path / "filler"
        for _ in range(tries):
            _fill(filler)
            for _ in range(rng.randint(1, 4)):  # ticks on a full disk
                n = rng.randint(0, 30)
                lat.record_many([float(rng.randint(1, 9)) for _ in range(n)])
                recorded += n
                try:
                    agent.tick(send=rng.random() < 0.7)
                    faulted += agent.stats()["spool-faulted"] == 1
                except Exception:  # noqa: BLE001 - counted; the test fails on any
                    crashed += 1
            filler.unlink()
            for _ in range(rng.randint(1, 3)):  # and with room again
                n = rng.randint(0, 30)
                lat.record_many([float(rng.randint(1, 9)) for _ in range(n)])
                recorded += n
                try:
                    agent.tick()
                except Exception:  # noqa: BLE001
                    crashed += 1
        for _ in range(20):
            result = agent.tick()
            if result.failure is None and agent.stats()["spool-records"] == 0:
                break
        stats = agent.stats()
        try:
            agent.close()
        except Exception:  # noqa: BLE001
            crashed += 1
    stored = int(sum(p.value for p in server.store.metric_series(DEVICE, "resnet18",
                                                                 "latency-ms-count")))
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("edgetelemetry")]
    torture_report(tries=tries, values=recorded, lost=recorded - stored,
                   duplicated=max(0, stored - recorded), crashed=crashed,
                   ticks_faulted=faulted, warnings=len(warnings))
    assert crashed == 0
    assert len(warnings) <= tries, warnings  # one per period the disk was full, at most
    assert faulted > 0, "the disk never looked full to the agent: the test proves nothing"
    assert stats["spool-faulted"] == 0 and stats["spool-write-failures"] > 0
    assert stored == recorded
    assert os.path.ismount(tmp_path / "disk") is False
