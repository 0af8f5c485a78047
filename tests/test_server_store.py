"""The store, on both backends (SQLite and PostgreSQL, ``store_backends.py``): registry,
deployments, heartbeats and the queries of the fleet view, concurrency, reopen; and the SQLite
file's durability settings and query plans."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest_server import DEVICE, FLEET, heartbeat
from store_backends import (
    registered,
    store_factory_fixture,  # noqa: F401 - the fixture
    store_target_fixture,  # noqa: F401 - the fixture
)

from edgetelemetry.server import (
    SCHEMA_VERSION,
    DeviceRefused,
    RegistrationError,
    Store,
    StoreError,
    apply_registry,
)
from edgetelemetry.server.store import FleetStore, open_store

DEPLOYMENT = {
    "DeploymentName": "rollout-1",
    "Type": "Model",
    "FailureHandlingPolicy": "DO_NOTHING",
    "Definitions": [{"ModelHandle": "m1", "S3Url": "s3://bucket/m1.tgz", "State": "DEPLOY"}],
}


def ready(store_factory: Callable[..., FleetStore]) -> FleetStore:
    return registered(store_factory(), FLEET, [DEVICE])


def test_file_store_is_wal_with_full_sync(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        with store._writing() as conn:  # the connection that writes
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("PRAGMA cache_size").fetchone()[0] < -100_000  # KiB


def test_queries_use_the_indexes(tmp_path: Path) -> None:
    def plan(conn: sqlite3.Connection, sql: str, *args: object) -> str:
        return " ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))

    with Store(str(tmp_path / "s.db")) as store, store._connection() as conn:
        # a metric over time: the device's heartbeat rows in time order, no sort
        found = plan(conn, "SELECT ts, points FROM heartbeats WHERE device_id = ? AND ts >= ? "
                     "AND ts <= ? ORDER BY ts, number", 1, 0, 1)
        assert "USING INDEX heartbeats_by_device (device_id=? AND ts>? AND ts<?)" in found, found
        assert "TEMP B-TREE" not in found
        # a resend key: the unique index, not a scan
        found = plan(conn, "SELECT 1 FROM heartbeats WHERE stream_id = ? AND seq = ?", 1, 1.0)
        assert "heartbeats_resend_key" in found, found
        # a metric's series: the unique index of series
        found = plan(conn, "SELECT number FROM series WHERE device_id = ? AND agent = ? AND "
                     "model = ? AND metric = ?", 1, 0, "m", "x")
        assert "SEARCH series" in found and "SCAN" not in found, found


def test_data_survives_reopen(store_target: str) -> None:
    with registered(open_store(store_target), FLEET, [DEVICE]) as store:  # type: ignore[attr-defined]
        assert store.record_heartbeat(heartbeat(), access_key_id="AKID") is True
        store.put_deployment(DEPLOYMENT, devices=[DEVICE])
    with open_store(store_target) as store:
        assert [d.name for d in store.devices()] == [DEVICE]
        assert store.devices()[0].last_heartbeat is not None
        assert [m.name for m in store.models(DEVICE)] == ["resnet18"]
        assert len(store.metric_series(DEVICE, "resnet18", "latency-ms-p99")) == 1
        assert store.deployments_for(DEVICE, FLEET) == [DEPLOYMENT]


def _execute(target: str, sql: str) -> None:
    """One statement straight on the database, beside the store (as another program would)."""
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(sql.encode())
    else:
        with contextlib.closing(sqlite3.connect(target)) as conn, conn:
            conn.execute(sql)


def test_refuses_foreign_or_newer_databases(store_target: str) -> None:
    _execute(store_target, "CREATE TABLE t(x integer)")
    with pytest.raises(StoreError, match="another application"):
        open_store(store_target)
    _execute(store_target, "DROP TABLE t")
    open_store(store_target).close()  # a new store
    _execute(store_target, "INSERT INTO schema_version(version, applied_at, description) "
                           f"VALUES ({SCHEMA_VERSION + 1}, 0, 'from the future')")
    for migrate in (False, True):
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
            open_store(store_target, migrate=migrate)


def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite" * 1000)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        Store(str(garbage))
    assert garbage.read_bytes() == b"not sqlite" * 1000


def test_registration_rules(store_factory: Callable[..., FleetStore]) -> None:
    with ready(store_factory) as store:
        assert store.check_device(DEVICE, FLEET) == "REGISTERED"
        with pytest.raises(DeviceRefused) as info:
            store.check_device("ghost", FLEET)
        assert info.value.reason == "unregistered"
        store.register_fleet("fleet-b")
        with pytest.raises(RegistrationError, match="deregister it"):
            store.register_devices("fleet-b", [DEVICE])
        with pytest.raises(DeviceRefused) as info:
            store.check_device(DEVICE, "fleet-b")
        assert info.value.reason == "fleet"
        with pytest.raises(RegistrationError, match="does not exist"):
            store.register_devices("no-fleet", ["d1"])
        with pytest.raises(RegistrationError, match="pattern"):
            store.register_devices(FLEET, ["bad name"])
        with pytest.raises(RegistrationError):
            store.deregister_devices(["ghost"])
        store.deregister_devices([DEVICE])
        assert store.check_device(DEVICE, FLEET) == "DEREGISTERED"
        with pytest.raises(DeviceRefused):
            store.record_heartbeat(heartbeat())
        store.register_devices("fleet-b", [DEVICE])  # a deregistered device may move
        assert store.check_device(DEVICE, "fleet-b") == "REGISTERED"


def test_deployments_are_checked_against_the_model(
    store_factory: Callable[..., FleetStore],
) -> None:
    with ready(store_factory) as store:
        for bad in (
            {**DEPLOYMENT, "Type": "Firmware"},
            {**DEPLOYMENT, "Definitions": [{"S3Url": "https://not-s3/x"}]},
            {**DEPLOYMENT, "Unknown": 1},
        ):
            with pytest.raises(RegistrationError):
                store.put_deployment(bad, fleets=[FLEET])
        with pytest.raises(RegistrationError, match="targets no"):
            store.put_deployment(DEPLOYMENT)
        store.put_deployment(DEPLOYMENT, fleets=[FLEET], devices=[DEVICE])
        assert store.deployments_for(DEVICE, FLEET) == [DEPLOYMENT]  # once, not twice
        store.put_deployment(
            {**DEPLOYMENT, "FailureHandlingPolicy": "ROLLBACK_ON_FAILURE"}, devices=["other"]
        )
        assert store.deployments_for(DEVICE, FLEET) == []  # replaced, targets too
        store.remove_deployment("rollout-1")
        assert store.deployments_for("other", FLEET) == []


def test_apply_registry_document(store_factory: Callable[..., FleetStore]) -> None:
    document = {
        "fleets": [
            {"name": "line-1", "description": "north", "devices": ["cam-1", "cam-2"]},
            {"name": "line-2", "devices": ["cam-3"]},
        ],
        "deregister": ["cam-3"],
        "deployments": [{"deployment": DEPLOYMENT, "fleets": ["line-1"]}],
    }
    with store_factory() as store:
        counts = apply_registry(store, document)
        assert counts == {"fleets": 2, "devices": 3, "deregistered": 1, "deployments": 1}
        assert apply_registry(store, json.loads(json.dumps(document))) == counts  # idempotent
        assert [(d.name, d.registered) for d in store.devices()] == [
            ("cam-1", True),
            ("cam-2", True),
            ("cam-3", False),
        ]
        assert store.deployments_for("cam-2", "line-1") == [DEPLOYMENT]
        for bad in (
            {"fleet": []},
            {"fleets": {}},
            {"fleets": [{"devices": []}]},
            {"deployments": [{"fleets": ["line-1"]}]},
            [],
        ):
            with pytest.raises(RegistrationError):
                apply_registry(store, bad)  # type: ignore[arg-type]


def test_model_times_follow_the_latest_report(store_factory: Callable[..., FleetStore]) -> None:
    with ready(store_factory) as store:
        store.record_heartbeat(
            heartbeat(
                Models=[
                    {"ModelName": "resnet18", "ModelVersion": "1", "LatestInference": 1_700_000_100}
                ]
            )
        )
        store.record_heartbeat(
            heartbeat(
                Models=[
                    {
                        "ModelName": "resnet18",
                        "ModelVersion": "1",
                        "LatestSampleTime": 1_700_000_050,
                    }
                ]
            )
        )
        (model,) = store.models(DEVICE)
        assert model.latest_inference == 1_700_000_100  # kept: the second report had none
        assert model.latest_sample_time == 1_700_000_050


def test_metric_names_and_latest_points(store_factory: Callable[..., FleetStore]) -> None:
    def metric(name: str, value: float, ts: int, dim: str = "all") -> dict:
        return {"MetricName": name, "Value": value, "Timestamp": ts, "Dimension": dim}

    with ready(store_factory) as store:
        for ts, version, scale in ((1_700_000_000, "1", 1.0), (1_700_000_060, "1", 2.0),
                                   (1_700_000_030, "2", 5.0)):
            store.record_heartbeat(heartbeat(Models=[{
                "ModelName": "resnet18", "ModelVersion": version, "ModelMetrics": [
                    metric("latency-ms-p50", 1.0 * scale, ts),
                    metric("latency-ms-p99", 9.0 * scale, ts),
                    metric("latency-ms-p99", 8.0 * scale, ts, "camera-rear"),
                    metric("confidence-p50", 0.5, ts),
                ]}]))
        assert store.metric_names(DEVICE, "resnet18") == [
            "confidence-p50", "latency-ms-p50", "latency-ms-p99"]
        assert store.metric_names(DEVICE, "resnet18", "latency") == [
            "latency-ms-p50", "latency-ms-p99"]
        assert store.metric_names(DEVICE, "resnet18", "nothing") == []
        assert store.metric_names("no-device", "resnet18") == []
        # the newest timestamp of that version, every dimension reported then
        assert store.latest_points(DEVICE, "resnet18", "1", "latency-ms-p99") == (
            1_700_000_060, {"all": 18.0, "camera-rear": 16.0})
        assert store.latest_points(DEVICE, "resnet18", "2", "latency-ms-p99") == (
            1_700_000_030, {"all": 45.0, "camera-rear": 40.0})
        assert store.latest_points(DEVICE, "resnet18", "3", "latency-ms-p99") == (None, {})


def test_concurrent_writers_and_readers(store_factory: Callable[..., FleetStore]) -> None:
    n_threads, per_thread = 8, 25
    errors: list[BaseException] = []
    with ready(store_factory) as store:

        def write() -> None:
            try:
                for _ in range(per_thread):
                    store.record_heartbeat(heartbeat())
                    store.devices()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=write) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert store.heartbeat_count(DEVICE) == n_threads * per_thread
        assert len(store.metric_series(DEVICE, "resnet18", "latency-ms-p99")) == (
            n_threads * per_thread
        )


def test_wal_checkpoints_run_beside_the_writer(tmp_path: Path) -> None:
    """Commits only append to the WAL; a thread of the store copies it into the file."""
    path = tmp_path / "s.db"
    store = registered(Store(str(path)), FLEET, [DEVICE])
    for _ in range(20):
        store.record_heartbeat(heartbeat())
    checkpointer = store._checkpointer
    assert checkpointer is not None
    deadline = time.monotonic() + 30
    while checkpointer.checkpoints < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # the database file alone, without its WAL, holds every committed heartbeat
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    with Store(str(copy)) as alone:
        assert alone.heartbeat_count(DEVICE) == 20
    store.close()
    assert not checkpointer._thread.is_alive()


def test_postgresql_errors_are_one_line_without_the_password(postgresql_url: str) -> None:
    wrong = postgresql_url.replace("://postgres:", "://postgres:not-the-password-7d1e", 1)
    for url in (wrong, "postgresql://postgres:secret-7d1e@127.0.0.1:1/nothing"):
        with pytest.raises(StoreError, match="cannot connect to the store") as info:
            open_store(url)
        assert "7d1e" not in str(info.value) and "***" in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("mysql://db/fleet")
    with open_store(postgresql_url) as store:
        assert "***" in str(store.path) and postgresql_url.split("@")[0] not in str(store.path)
        store.ping()
