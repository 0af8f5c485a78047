"""Resends are stored once (issue 12 item 3, /work/notes/dedup-contract.md), on both backends:
a request whose (device, spool-seq Dimension, spool-seq Value) is already stored writes
nothing and the endpoint answers it 200; the key is a unique constraint, so it holds for
threads, processes and replicas racing with the same request, and after retention rolled the
first send up."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest_server import AKID, CREDENTIALS, REGION, SECRET, client
from store_backends import (
    registered,
    store_factory_fixture,  # noqa: F401 - the fixture
    store_target_fixture,  # noqa: F401 - the fixture
)

from edgetelemetry.server import EndpointServer
from edgetelemetry.server.store import FleetStore, open_store
from edgetelemetry.server.store.base import DEFAULT_KEEP_RAW

FLEET, DEVICE = "line-1", "cam-1"
SPOOL = "0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0


def request(seq: float | None, dim: str = f"{SPOOL}/1/1", device: str = DEVICE,
            ts: float = NOW, value: float = 12.5) -> dict[str, Any]:
    agent = [{"MetricName": "spool-bytes", "Value": 4096.0, "Dimension": "all", "Timestamp": ts}]
    if seq is not None:
        agent.append({"MetricName": "spool-seq", "Value": seq, "Dimension": dim, "Timestamp": ts})
    return {
        "AgentVersion": "1.0",
        "DeviceName": device,
        "DeviceFleetName": FLEET,
        "AgentMetrics": agent,
        "Models": [{"ModelName": "resnet18", "ModelVersion": "1", "ModelMetrics": [
            {"MetricName": "latency-ms-count", "Value": 600.0, "Dimension": "all", "Timestamp": ts},
            {"MetricName": "latency-ms-p99", "Value": value, "Dimension": "all", "Timestamp": ts},
        ]}],
    }


def stored_seqs(store: FleetStore, device: str = DEVICE) -> list[float | None]:
    return sorted(p.value or 0 for p in store.metric_series(device, None, "spool-seq"))


def test_a_resend_writes_nothing(store_factory: Callable[..., FleetStore]) -> None:
    store = registered(store_factory(), FLEET, [DEVICE, "cam-2"])
    assert store.record_heartbeat(request(7)) is True
    # the same key, even with other values (what was sent first is what counts)
    assert store.record_heartbeat(request(7)) is False
    assert store.record_heartbeat(request(7, value=99.0, ts=NOW + 60)) is False
    assert store.heartbeat_count(DEVICE) == 1 and stored_seqs(store) == [7]
    assert [p.value for p in store.metric_series(DEVICE, "resnet18", "latency-ms-p99")] == [12.5]
    # what is not the same key is stored
    for other in (
        request(8),  # the next record
        request(7, dim=f"{SPOOL}/2/3"),  # another part of a split record
        request(7, dim="fedcba9876543210fedcba9876543210/1/1"),  # a recreated spool
        request(7, device="cam-2"),  # another device
        request(7, dim="all"),  # an old agent's key
    ):
        assert store.record_heartbeat(other) is True
    assert store.record_heartbeat(request(7, dim="all")) is False
    # no spool-seq (other clients, status heartbeats), or more than one: always stored
    two = request(9)
    two["AgentMetrics"].append({**two["AgentMetrics"][1], "Dimension": "x/1/1"})
    for _ in range(2):
        assert store.record_heartbeat(request(None)) is True
        assert store.record_heartbeat(two) is True
    assert store.heartbeat_count(DEVICE) == 5 + 4 and store.heartbeat_count("cam-2") == 1


def test_threads_racing_with_one_request_store_it_once(
    store_factory: Callable[..., FleetStore],
) -> None:
    """8 threads over 4 store objects (as 4 workers would be) send the same 25 requests, each
    request by every thread at once."""
    stores = [registered(store_factory(), FLEET, [DEVICE])] + [store_factory() for _ in range(3)]
    keys, threads = 25, 8
    barrier = threading.Barrier(threads)
    results: list[list[bool]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def send(k: int) -> None:
        try:
            for seq in range(keys):
                barrier.wait(timeout=60)
                results[k].append(stores[k % len(stores)].record_heartbeat(request(seq)))
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    pool = [threading.Thread(target=send, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    assert [sum(r[seq] for r in results) for seq in range(keys)] == [1] * keys
    assert stores[0].heartbeat_count(DEVICE) == keys
    assert stored_seqs(stores[0]) == list(range(keys))


def _send_all(target: str, keys: int, start: Any) -> list[bool]:
    with open_store(target) as store:
        start.wait(60)
        return [store.record_heartbeat(request(seq)) for seq in range(keys)]


def test_processes_racing_with_one_request_store_it_once(store_target: str) -> None:
    with open_store(store_target) as store:
        registered(store, FLEET, [DEVICE])
    ctx = multiprocessing.get_context("spawn")
    keys, processes = 40, 4
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(processes) as pool:
            pending = pool.starmap_async(_send_all, [(store_target, keys, start)] * processes)
            time.sleep(1.0)  # let every process open its store
            start.set()
            results = pending.get(timeout=300)
    assert [sum(r[seq] for r in results) for seq in range(keys)] == [1] * keys
    with open_store(store_target) as store:
        assert store.heartbeat_count(DEVICE) == keys
        assert stored_seqs(store) == list(range(keys))


def test_a_resend_of_a_rolled_up_heartbeat_is_still_recognised(
    store_factory: Callable[..., FleetStore],
) -> None:
    now = [NOW]
    store = registered(store_factory(clock=lambda: now[0]), FLEET, [DEVICE])
    for seq in range(5):
        assert store.record_heartbeat(request(seq, ts=NOW + 60 * seq))
    now[0] = NOW + 10 * 86400
    report = store.compact()
    assert report.heartbeats_rolled_up == 5 and store.metric_series(DEVICE, None, "spool-seq") == []
    (hour,) = store.metric_rollups(DEVICE, "resnet18", "latency-ms-count")
    assert hour.value == 5 * 600
    for seq in range(5):  # a crash-resend of a backlog a week later
        assert store.record_heartbeat(request(seq, ts=NOW + 60 * seq)) is False
    assert store.record_heartbeat(request(5, ts=now[0])) is True
    store.compact(now=now[0] + 10 * 86400)
    assert [h.value for h in store.metric_rollups(DEVICE, "resnet18", "latency-ms-count")] == [
        5 * 600, 600]
    assert store.heartbeat_count(DEVICE) == 6


@pytest.mark.parametrize("sends", [2, 3])
def test_the_endpoint_answers_a_resend_200_and_stores_it_once(
    store_factory: Callable[..., FleetStore], sends: int, caplog: pytest.LogCaptureFixture
) -> None:
    store = registered(store_factory(), FLEET, [DEVICE])
    with EndpointServer(credentials=CREDENTIALS, region=REGION, store=store) as server:
        boto = client(server.url, AKID, SECRET)
        body = request(41, ts=time.time())
        with caplog.at_level("INFO", logger="edgetelemetry.server.app"):
            for _ in range(sends):
                answer = boto.send_heartbeat(**body)
                assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert store.heartbeat_count(DEVICE) == 1 and stored_seqs(store) == [41]
    assert sum("a resend, already stored" in r.getMessage() for r in caplog.records) == sends - 1


def test_resends_racing_with_compaction_are_stored_once(
    store_factory: Callable[..., FleetStore],
) -> None:
    """While compaction rolls up one hour after another, 3 threads resend every stored key and
    2 threads race to send new keys into those hours: no resend is stored again, every new key
    once, and the rollups hold every heartbeat once.  (On PostgreSQL, a compaction that read
    its resend marks before deleting the rows stored a new key twice in 2 of 6 runs.)"""
    hours, new = 30, 30
    stores = [registered(store_factory(), FLEET, [DEVICE])] + [store_factory() for _ in range(3)]
    stamp = [NOW + 3600 * h for h in range(hours)]
    for seq in range(hours):
        assert stores[0].record_heartbeat(request(seq, ts=stamp[seq])) is True
    done = threading.Event()
    stored_again: list[int] = []
    new_results: list[list[bool]] = [[], []]
    errors: list[BaseException] = []

    def compactor() -> None:
        try:
            for h in range(hours):  # each pass rolls up the next hour
                stores[1].compact(now=stamp[h] + DEFAULT_KEEP_RAW + 3600)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    def resender(k: int) -> None:
        try:
            while not done.is_set():
                for seq in range(k, hours, 3):
                    if stores[2].record_heartbeat(request(seq, ts=stamp[seq])):
                        stored_again.append(seq)
        except BaseException as exc:
            errors.append(exc)

    def sender(k: int) -> None:
        try:
            for i in range(new):
                seq = hours + i
                new_results[k].append(stores[3].record_heartbeat(
                    request(seq, ts=stamp[i % hours] + 60)))
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=compactor)]
    pool += [threading.Thread(target=resender, args=(k,)) for k in range(3)]
    pool += [threading.Thread(target=sender, args=(k,)) for k in range(2)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    assert stored_again == []
    assert [a + b for a, b in zip(*new_results)] == [1] * new
    stores[0].compact(now=stamp[-1] + DEFAULT_KEEP_RAW + 7200)
    assert stores[0].metric_series(DEVICE, None, "spool-seq") == []
    counts = stores[0].metric_rollups(DEVICE, "resnet18", "latency-ms-count")
    assert sum(h.value for h in counts) == (hours + new) * 600
    assert stores[0].heartbeat_count(DEVICE) == hours + new
