"""The SQLite store: durability settings, schema and indexes, registry, concurrency, reopen."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from conftest_server import DEVICE, FLEET, heartbeat

from edgetelemetry.server import (
    SCHEMA_VERSION,
    DeviceRefused,
    RegistrationError,
    Store,
    StoreError,
    apply_registry,
)

DEPLOYMENT = {
    "DeploymentName": "rollout-1",
    "Type": "Model",
    "FailureHandlingPolicy": "DO_NOTHING",
    "Definitions": [{"ModelHandle": "m1", "S3Url": "s3://bucket/m1.tgz", "State": "DEPLOY"}],
}


def registered(path: str | None) -> Store:
    store = Store(path)
    store.register_fleet(FLEET)
    store.register_devices(FLEET, [DEVICE])
    return store


def test_file_store_is_wal_with_full_sync(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        with store._connection() as conn:  # the settings of the connections that write
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_queries_use_the_indexes(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store, store._connection() as conn:
        plan = " ".join(
            str(r[3])
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM heartbeats WHERE device = ? "
                "ORDER BY received_at DESC, id DESC LIMIT 1",
                ("d",),
            )
        )
        assert "heartbeats_by_device_time" in plan and "TEMP B-TREE" not in plan
        plan = " ".join(
            str(r[3])
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT ts, value FROM metrics WHERE device = ? AND "
                "model_name IS ? AND metric_name = ? AND ts >= ? AND ts <= ? ORDER BY ts",
                ("d", "m", "x", 0, 1),
            )
        )
        assert "metrics_series" in plan and "TEMP B-TREE" not in plan


def test_data_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with registered(path) as store:
        store.record_heartbeat(heartbeat(), access_key_id="AKID")
        store.put_deployment(DEPLOYMENT, devices=[DEVICE])
    with Store(path) as store:
        assert [d.name for d in store.devices()] == [DEVICE]
        assert store.devices()[0].last_heartbeat is not None
        assert [m.name for m in store.models(DEVICE)] == ["resnet18"]
        assert len(store.metric_series(DEVICE, "resnet18", "latency-ms-p99")) == 1
        assert store.deployments_for(DEVICE, FLEET) == [DEPLOYMENT]


def test_refuses_foreign_or_newer_databases(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another application"):
        Store(str(foreign))
    newer = tmp_path / "newer.db"
    Store(str(newer)).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        Store(str(newer))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite" * 1000)
    with pytest.raises(StoreError):
        Store(str(garbage))


def test_registration_rules() -> None:
    with registered(None) as store:
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


def test_deployments_are_checked_against_the_model() -> None:
    with registered(None) as store:
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


def test_apply_registry_document() -> None:
    document = {
        "fleets": [
            {"name": "line-1", "description": "north", "devices": ["cam-1", "cam-2"]},
            {"name": "line-2", "devices": ["cam-3"]},
        ],
        "deregister": ["cam-3"],
        "deployments": [{"deployment": DEPLOYMENT, "fleets": ["line-1"]}],
    }
    with Store(None) as store:
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


def test_model_times_follow_the_latest_report() -> None:
    with registered(None) as store:
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


def test_metric_names_and_latest_points() -> None:
    def metric(name: str, value: float, ts: int, dim: str = "all") -> dict:
        return {"MetricName": name, "Value": value, "Timestamp": ts, "Dimension": dim}

    with registered(None) as store:
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


def test_concurrent_writers_and_readers_on_a_file_store(tmp_path: Path) -> None:
    n_threads, per_thread = 8, 25
    errors: list[BaseException] = []
    with registered(str(tmp_path / "s.db")) as store:

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
