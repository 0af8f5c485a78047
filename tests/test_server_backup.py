"""docs/operations.md's SQLite backup: an online copy with SQLite's backup API while the
endpoint writes is a consistent store holding every heartbeat acknowledged before it began."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from conftest_server import DEVICE, client, heartbeat
from serve_procs import ServeProcess

from edgetelemetry.server.store import open_read_only


def test_online_backup_while_serving(tmp_path: Path) -> None:
    acked = 0
    stop = threading.Event()

    with ServeProcess(tmp_path, "--log-level", "WARNING") as serve:
        edge = client(serve.url)

        def send() -> None:
            nonlocal acked
            while not stop.is_set():
                edge.send_heartbeat(**heartbeat())
                acked += 1

        for _ in range(20):
            edge.send_heartbeat(**heartbeat())
            acked += 1
        sender = threading.Thread(target=send)
        sender.start()
        try:
            before = acked
            copy = tmp_path / "backup.sqlite3"
            with sqlite3.connect(serve.store) as source, sqlite3.connect(copy) as target:
                source.backup(target)  # what `sqlite3 FILE ".backup COPY"` runs
            source.close()
            target.close()
        finally:
            stop.set()
            sender.join(30)
    with open_read_only(copy) as store:
        stored = store.heartbeat_count(DEVICE)
    assert before <= stored <= acked
