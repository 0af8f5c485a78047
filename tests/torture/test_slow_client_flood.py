"""Issue 12 item 2: slow clients cannot lock devices out, in both ways ``serve`` runs.

The flood of the attack run, same shape and pace: connections that send a request line and then
one byte every 4 s (a quarter of them send full headers and trickle a body instead), from 8
loopback addresses, each reopened as soon as the server drops it.  Beside it, devices send
signed heartbeats on fresh connections; every one must get 200 within a bounded time.

- embedded: ``edgetelemetry serve`` with its defaults (128 connections, 32 per address, 10 s
  for the headers, 20 s for the body, the stalest dropped first);
- workers: ``serve --workers 2`` straight on loopback: each worker serves with the embedded
  server, so each holds the flood with the same limits (per worker);
- workers behind nginx: the same behind the shipped front (contrib/nginx), the set-up for
  replicas.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest_server import client, heartbeat
from nginx_front import start_front
from serve_procs import ServeProcess
from slow_clients import SlowFlood, send_heartbeats

from .conftest import torture_size

# more than the embedded server's 128 slots: the 128 of the attack run filled them exactly
CONNECTIONS = torture_size(ci=160, full=512)
SECONDS = torture_size(ci=14, full=90)  # past the 10 s header deadline at least once
PAUSE = 0.5
WORST_ALLOWED = 5.0  # seconds for one heartbeat while the flood runs


@pytest.mark.parametrize("mode", ["embedded", "workers", "workers behind nginx"])
def test_slow_client_flood_does_not_lock_out_devices(
    tmp_path: Path, mode: str, torture_report: Callable[..., None]
) -> None:
    with contextlib.ExitStack() as stack:
        if mode == "embedded":
            serve = stack.enter_context(ServeProcess(tmp_path))
            url = serve.url
        else:
            serve = stack.enter_context(ServeProcess(tmp_path, "--workers", "2"))
            url = serve.url
            if mode == "workers behind nginx":
                url = start_front(stack, [f"127.0.0.1:{serve.port}"]).url
        host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
        flood = stack.enter_context(SlowFlood(host, int(port), connections=CONNECTIONS))
        time.sleep(2.0)  # the flood holds its connections before the first device comes

        def params(i: int) -> dict[str, Any]:
            return heartbeat()

        devices = send_heartbeats(lambda: client(url), params, int(SECONDS / PAUSE), PAUSE)
        figures = flood.stop()
        assert serve.proc is not None
        crashed = 0 if serve.proc.poll() is None else 1
        log = serve.log()
    torture_report(
        mode=mode, tries=devices.sent, ok=devices.statuses.get(200, 0),
        other=sum(n for s, n in devices.statuses.items() if s != 200) + len(devices.errors),
        worst_s=round(devices.worst, 2), flood_connections=CONNECTIONS,
        flood_opened=figures.opened, flood_dropped=figures.dropped_by_server, crashed=crashed,
    )
    assert crashed == 0, log[-3000:]
    assert devices.errors == [], devices.errors[:5]
    assert devices.statuses == {200: devices.sent}, devices.statuses
    assert devices.worst < WORST_ALLOWED, devices.latencies
    # the flood was real: it held connections for the whole run
    assert figures.opened >= 128
    assert "Traceback" not in log, log[-3000:]
