"""A device's second heartbeat and later ones take the store's shortcut (PostgreSQL: one
statement with the ids it remembered, ``PostgresStore._record_known``; SQLite: one statement
less); on both backends they must store exactly what the first one's transaction stores, and
nothing remembered may outlive a change another process made: a deregistration, a move to
another fleet, a resend key stored or rolled up meanwhile."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from store_backends import (
    registered,
    store_factory_fixture,  # noqa: F401 - the fixture
    store_target_fixture,  # noqa: F401 - the fixture
)

from edgetelemetry.server.store import DeviceRefused, FleetStore

FLEET, DEVICE = "line-1", "cam-1"
NOW = 1_700_000_000.0


def request(ts: float, value: float, *, seq: float | None = None, fleet: str = FLEET,
            models: list[dict[str, Any]] | None = None,
            deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    agent = [{"MetricName": "spool-bytes", "Value": value, "Dimension": "all", "Timestamp": ts}]
    if seq is not None:
        agent.append({"MetricName": "spool-seq", "Value": seq, "Dimension": "s/1/1",
                      "Timestamp": ts})
    body: dict[str, Any] = {
        "AgentVersion": f"1.{int(value)}",
        "DeviceName": DEVICE,
        "DeviceFleetName": fleet,
        "AgentMetrics": agent,
        "Models": models if models is not None else [
            {"ModelName": "resnet18", "ModelVersion": "1", "LatestInference": ts,
             "ModelMetrics": [{"MetricName": "latency-ms-p99", "Value": value,
                               "Dimension": "all", "Timestamp": ts}]}],
    }
    if deployment is not None:
        body["DeploymentResult"] = deployment
    return body


def test_later_heartbeats_store_what_the_first_one_does(
    store_factory: Callable[..., FleetStore],
) -> None:
    store = registered(store_factory(), FLEET, [DEVICE])
    for i in range(4):  # the first numbers everything; the others are the usual heartbeat
        assert store.record_heartbeat(request(NOW + 60 * i, float(i)), received_at=NOW + 60 * i)
    # a late heartbeat (older metric time) is stored but moves no latest value
    assert store.record_heartbeat(request(NOW - 60, 99.0), received_at=NOW + 300)
    result = {"DeploymentName": "d1", "DeploymentStatus": "SUCCESS",
              "DeploymentStatusMessage": "ok", "DeploymentStartTime": NOW,
              "DeploymentEndTime": NOW + 1, "DeploymentModels": []}
    assert store.record_heartbeat(request(NOW + 360, 6.0, deployment=result),
                                  received_at=NOW + 360)
    assert store.heartbeat_count(DEVICE) == 6
    values = [p.value for p in store.metric_series(DEVICE, "resnet18", "latency-ms-p99")]
    assert values == [99.0, 0.0, 1.0, 2.0, 3.0, 6.0]
    last, latest = store.latest_points(DEVICE, "resnet18", "1", "latency-ms-p99")
    assert last == NOW + 360 and latest == {"all": 6.0}
    (model,) = store.models(DEVICE)
    assert (model.first_seen, model.last_seen, model.latest_inference) == (
        NOW, NOW + 360, NOW + 360)
    (device,) = store.devices()
    assert device.last_heartbeat == NOW + 360 and device.agent_version == "1.6"
    (deployed,) = store.deployment_results(DEVICE)
    assert (deployed.deployment_name, deployed.received_at) == ("d1", NOW + 360)


def test_a_deregistration_by_another_process_holds_at_once(
    store_factory: Callable[..., FleetStore],
) -> None:
    endpoint = registered(store_factory(), FLEET, [DEVICE])
    for i in range(3):
        assert endpoint.record_heartbeat(request(NOW + i, 1.0))
    registry = store_factory()  # the registry CLI, or another replica
    registry.deregister_devices([DEVICE])
    with pytest.raises(DeviceRefused) as refused:
        endpoint.record_heartbeat(request(NOW + 10, 1.0))
    assert refused.value.reason == "deregistered"
    registry.register_fleet("line-2")
    registry.register_devices("line-2", [DEVICE])  # back, in another fleet
    with pytest.raises(DeviceRefused) as moved:
        endpoint.record_heartbeat(request(NOW + 11, 1.0))
    assert moved.value.reason == "fleet"
    assert endpoint.record_heartbeat(request(NOW + 12, 1.0, fleet="line-2"))
    assert endpoint.heartbeat_count(DEVICE) == 4


def test_a_resend_key_stored_by_another_process_is_a_resend(
    store_factory: Callable[..., FleetStore],
) -> None:
    one = registered(store_factory(), FLEET, [DEVICE])
    other = store_factory()
    for seq in range(3):  # both know the device, its series and its resend stream
        assert one.record_heartbeat(request(NOW + seq, 1.0, seq=seq))
        assert other.record_heartbeat(request(NOW + seq, 1.0, seq=seq)) is False
    assert other.record_heartbeat(request(NOW + 3, 1.0, seq=3))
    assert one.record_heartbeat(request(NOW + 3, 2.0, seq=3)) is False
    assert one.heartbeat_count(DEVICE) == 4
    assert [p.value for p in one.metric_series(DEVICE, "resnet18", "latency-ms-p99")] == [1.0] * 4


def test_a_model_listed_twice_is_stored_once(store_factory: Callable[..., FleetStore]) -> None:
    store = registered(store_factory(), FLEET, [DEVICE])
    twice = [{"ModelName": "m", "ModelVersion": "1", "LatestInference": NOW + k,
              "ModelMetrics": []} for k in (1, 2)]
    for i in range(3):
        assert store.record_heartbeat(request(NOW + i, 1.0, models=twice), received_at=NOW + i)
    (model,) = store.models(DEVICE)
    assert (model.last_seen, model.latest_inference) == (NOW + 2, NOW + 2)
    assert store.heartbeat_count(DEVICE) == 3


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "sqlite-3.34"])
def test_sqlite_without_update_returning_stores_the_same(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """The SQLite of Debian 11 (3.34, the wheels' targets) has no ``UPDATE ... RETURNING``:
    the store counts a device's heartbeat with an update and a read there, and must store,
    count and refuse exactly as with it."""
    from edgetelemetry.server.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store.Store, "update_returning", returning)
    statements: list[str] = []
    for name in ("rows", "one", "run"):
        method = getattr(sqlite_store._SqliteDb, name)

        def traced(self: Any, sql: str, params: Any = (), _method: Any = method) -> Any:
            statements.append(sql)
            return _method(self, sql, params)

        monkeypatch.setattr(sqlite_store._SqliteDb, name, traced)
    with sqlite_store.Store(str(tmp_path / "store.sqlite3")) as store:
        registered(store, FLEET, [DEVICE, "cam-2"])
        for i in range(3):
            assert store.record_heartbeat(request(NOW + 60 * i, float(i)), received_at=NOW + 60 * i)
        # the same metric time twice: told apart by the number the device row's count gives
        assert store.record_heartbeat(request(NOW, 7.0), received_at=NOW + 200)
        assert store.heartbeat_count(DEVICE) == 4
        store.deregister_devices(["cam-2"])
        with pytest.raises(DeviceRefused):
            store.record_heartbeat({**request(NOW, 1.0), "DeviceName": "cam-2"}, received_at=NOW)
        assert store.record_heartbeat({**request(NOW, 1.0), "DeviceName": "cam-9"},
                                      auto_register=True, received_at=NOW)
        assert store.heartbeat_count("cam-9") == 1 and store.heartbeat_count() == 5
    assert any(" RETURNING " in sql for sql in statements) == returning


def test_odd_names_and_numbers_are_stored_exactly(
    store_factory: Callable[..., FleetStore],
) -> None:
    """The usual heartbeat's latest values and models travel as array literals on PostgreSQL:
    quotes, backslashes, commas, braces, a model called NULL, an empty version, tiny and huge
    numbers and missing times come back as sent, the first heartbeat (the transaction) and the
    later ones (the shortcut) alike."""
    store = registered(store_factory(), FLEET, [DEVICE])
    names = ['q"uote\\back,comma{brace}', "NULL", "é ü 模型"]
    values = [1e-300, 12345678901234567890.0, -0.1, 1.7976931348623157e308]
    for i, value in enumerate(values):
        models = [{"ModelName": name, "ModelVersion": "" if k == 1 else f"v{k}",
                   "ModelMetrics": [{"MetricName": "m", "Value": value + k, "Dimension": "d",
                                     "Timestamp": NOW + i}]}
                  for k, name in enumerate(names)]
        models[0]["LatestInference"] = NOW + i + 0.123456789
        assert store.record_heartbeat(request(NOW + i, value, models=models), received_at=NOW + i)
        for k, name in enumerate(names):
            version = "" if k == 1 else f"v{k}"
            assert store.latest_points(DEVICE, name, version, "m") == (NOW + i, {"d": value + k})
    stored = {(m.name, m.version): m for m in store.models(DEVICE)}
    assert set(stored) == {(name, "" if k == 1 else f"v{k}") for k, name in enumerate(names)}
    assert stored[(names[0], "v0")].latest_inference == NOW + 3.123456789
    assert stored[("NULL", "")].latest_inference is None


def test_concurrent_writers_of_one_device_keep_its_newest_values(
    store_factory: Callable[..., FleetStore],
) -> None:
    """Writers of one device in several processes (stores), times shuffled: each series keeps
    the value of its newest time, whatever order the writes commit in.  A series first seen
    in a late heartbeat is kept beside the older ones."""
    registered(store_factory(), FLEET, [DEVICE])
    writers = [store_factory() for _ in range(4)]
    times = list(range(40))
    random.Random(7).shuffle(times)
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for t in times[k::len(writers)]:
                extra = [{"MetricName": f"m{t % 3}", "Value": float(t), "Dimension": "all",
                          "Timestamp": NOW + t}]
                body = request(NOW + t, float(t))
                body["AgentMetrics"] += extra
                assert writers[k].record_heartbeat(body, received_at=NOW + 100)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reader = writers[0]
    assert reader.heartbeat_count(DEVICE) == 40
    assert reader.latest_points(DEVICE, "resnet18", "1", "latency-ms-p99") == (
        NOW + 39, {"all": 39.0})
    agent = {p.metric: (p.timestamp, p.value) for p in reader.latest_agent_points(device=DEVICE)}
    assert agent == {"spool-bytes": (NOW + 39, 39.0), "m0": (NOW + 39, 39.0),
                     "m1": (NOW + 37, 37.0), "m2": (NOW + 38, 38.0)}
