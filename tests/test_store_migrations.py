"""Versioned migrations: a store written by edgetelemetry 0.1 (schema 1) upgrades in place with
nothing lost, each step is one transaction, re-runs do nothing, processes racing to migrate
migrate once, a newer store is refused, and ``serve`` refuses an old store unless ``--migrate``.

``tests/golden/store-v1.sqlite3`` was written by edgetelemetry 0.1's ``Store`` (commit 34199eb):
three fleets' devices (one auto-registered, one deregistered), a deployment, heartbeats with
agent and model metrics over two model versions and two dimensions, a second model, a metric
without a timestamp, a deployment result, and one resend stored twice.  ``store-v1.json`` holds
what that version's queries answered; the upgraded store must answer the same.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from store_backends import store_target_fixture  # noqa: F401 - the fixture

from edgetelemetry.cli import main as cli_main
from edgetelemetry.server.store import (
    SCHEMA_VERSION,
    SchemaOutOfDate,
    Store,
    StoreError,
    open_read_only,
    open_store,
)
from edgetelemetry.server.store.migrations import convert

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(name="old_store")
def old_store_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.sqlite3"
    shutil.copyfile(GOLDEN / "store-v1.sqlite3", path)
    return path


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        return [(t, n, " ".join((sql or "").split())) for t, n, sql in rows]


def answers(store: Any, expected: dict[str, Any]) -> dict[str, Any]:
    """What the store answers to the questions the golden JSON recorded."""
    got: dict[str, Any] = {
        "devices": [asdict(d) for d in store.devices()], "models": {}, "results": {},
        "counts": {}, "deployments": {}, "names": {}, "series": [], "latest": [],
    }
    for d in store.devices():
        got["models"][d.name] = [asdict(m) for m in store.models(d.name)]
        got["results"][d.name] = [asdict(r) for r in store.deployment_results(d.name)]
        got["counts"][d.name] = store.heartbeat_count(d.name)
        got["deployments"][d.name] = store.deployments_for(d.name, d.fleet)
    got["counts"]["*"] = store.heartbeat_count()
    for key in expected["names"]:
        device, model = key.split("/")
        got["names"][key] = store.metric_names(device, model)
    for s in expected["series"]:
        points = store.metric_series(s["device"], s["model"], s["metric"])
        got["series"].append({**s, "points": [asdict(p) for p in points]})
    for x in expected["latest"]:
        ts, values = store.latest_points(x["device"], x["model"], x["version"], x["metric"])
        got["latest"].append({**x, "ts": ts, "values": values})
    return json.loads(json.dumps(got, sort_keys=True))


def test_a_schema_1_file_upgrades_in_place_with_nothing_lost(
    old_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = json.loads((GOLDEN / "store-v1.json").read_text())
    with pytest.raises(SchemaOutOfDate, match=f"edgetelemetry store migrate --store {old_store}"):
        Store(str(old_store))
    with pytest.raises(StoreError, match="store migrate"):
        open_read_only(old_store)
    assert user_version(old_store) == 1  # refusing touched nothing

    assert cli_main(["store", "migrate", "--store", str(old_store)]) == 0
    out = capsys.readouterr().out
    assert "applied 2: " in out and f"schema version {SCHEMA_VERSION}" in out
    assert user_version(old_store) == SCHEMA_VERSION  # what 0.1 checks: it refuses the file

    with open_read_only(old_store) as store:
        assert answers(store, expected) == expected
    assert cli_main(["store", "migrate", "--store", str(old_store)]) == 0
    assert "(up to date)" in capsys.readouterr().out

    with Store(str(old_store)) as store:
        # the resend key of a heartbeat stored under schema 1 still holds
        resend = {"AgentVersion": "1.0", "DeviceName": "cam-1", "DeviceFleetName": "line-1",
                  "AgentMetrics": [{"MetricName": "spool-seq", "Value": 5.0, "Dimension": "all",
                                    "Timestamp": 1_700_000_300}]}
        assert store.record_heartbeat(resend) is False
        assert store.record_heartbeat({**resend, "AgentMetrics": [
            {**resend["AgentMetrics"][0], "Value": 8.0}]}) is True
        assert store.heartbeat_count("cam-1") == expected["counts"]["cam-1"] + 1


def test_an_upgraded_store_has_the_schema_of_a_new_one(old_store: Path, tmp_path: Path) -> None:
    Store(str(old_store), migrate=True).close()
    Store(str(tmp_path / "new.sqlite3")).close()
    assert schema_of(old_store) == schema_of(tmp_path / "new.sqlite3")
    assert not any(name.startswith("v1_") for _, name, _ in schema_of(old_store))


def test_a_failed_step_leaves_the_store_as_it_was(
    old_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = schema_of(old_store)
    real = convert.convert_v1

    def half_then_fail(db: Any) -> None:
        real(db)
        raise RuntimeError("power cut, as it were")

    monkeypatch.setattr("edgetelemetry.server.store.migrations.sqlite.convert_v1", half_then_fail)
    with pytest.raises(RuntimeError, match="power cut"):
        Store(str(old_store), migrate=True)
    assert schema_of(old_store) == before and user_version(old_store) == 1
    monkeypatch.undo()
    with Store(str(old_store), migrate=True) as store:
        assert store.heartbeat_count() == json.loads(
            (GOLDEN / "store-v1.json").read_text())["counts"]["*"]


def _open_and_migrate(target: str) -> list[tuple[int, str]]:
    with open_store(target, migrate=True) as store:
        return store.migrations_applied + store.migrate()


def test_processes_racing_to_create_a_store_migrate_it_once(store_target: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.map(_open_and_migrate, [store_target] * 3)
    # every step applied by exactly one of them (under the lock, the others find it done)
    steps = sorted(step for applied in results for step, _ in applied)
    assert steps == sorted(set(steps)) and steps[-1] == SCHEMA_VERSION, results
    with open_store(store_target) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.migrate() == []


def test_store_migrate_command(store_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    if store_target.startswith("postgresql://"):
        # an empty database: migrate makes the store (replicas then start on a ready schema)
        assert cli_main(["store", "migrate", "--store", store_target]) == 0
        assert "applied 2: " in capsys.readouterr().out
    else:  # a missing file is a typo, not a new store
        assert cli_main(["store", "migrate", "--store", store_target]) == 2
        assert "no store at" in capsys.readouterr().err
        open_store(store_target).close()
    assert cli_main(["store", "migrate", "--store", store_target]) == 0
    assert "(up to date)" in capsys.readouterr().out


def test_serve_refuses_an_old_store_unless_asked_to_migrate(
    old_store: Path, tmp_path: Path
) -> None:
    creds = tmp_path / "keys.json"
    creds.write_text(json.dumps({"AKIDMIGRATE00001": "secret"}))
    creds.chmod(0o600)
    argv = [sys.executable, "-m", "edgetelemetry", "serve", "--store", str(old_store),
            "--port", "0", "--credentials-file", str(creds)]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert f"run 'edgetelemetry store migrate --store {old_store}'" in refused.stderr
    assert "--migrate" in refused.stderr and "Traceback" not in refused.stderr
    assert user_version(old_store) == 1

    proc = subprocess.Popen([*argv, "--migrate"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert user_version(old_store) == SCHEMA_VERSION


def test_serve_on_either_backend_compacts_in_the_background(
    store_target: str, tmp_path: Path
) -> None:
    """``serve --store TARGET`` (a file or a postgresql:// URL) stores heartbeats and its
    compactor thread rolls old ones up while it serves."""
    from conftest_server import client

    creds = tmp_path / "keys.json"
    creds.write_text(json.dumps({"AKIDSERVESTORE01": "secret"}))
    creds.chmod(0o600)
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"fleets": [{"name": "line-1", "devices": ["cam-1"]}]}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetelemetry", "serve", "--store", store_target, "--port", "0",
         "--credentials-file", str(creds), "--registry", str(registry),
         "--compact-every", "0.2", "--keep-raw", "1", "--keep-hourly", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on " in line, proc.communicate(timeout=30)
        url = line.split("listening on ", 1)[1].strip()
        edge = client(url, "AKIDSERVESTORE01", "secret")
        old, new = time.time() - 5 * 86400, time.time()
        for ts in (old, new):
            edge.send_heartbeat(AgentVersion="1.0", DeviceName="cam-1", DeviceFleetName="line-1",
                                AgentMetrics=[{"MetricName": "spool-bytes", "Value": 1.0,
                                               "Timestamp": ts, "Dimension": "all"}])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open_read_only(store_target) as store:
                if store.metric_rollups("cam-1", None, "spool-bytes"):
                    break
            time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    with open_read_only(store_target) as store:
        assert [h.points for h in store.metric_rollups("cam-1", None, "spool-bytes")] == [1]
        assert len(store.metric_series("cam-1", None, "spool-bytes")) == 1
        assert store.heartbeat_count("cam-1") == 2
