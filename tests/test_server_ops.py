"""The three data-plane operations through real boto3 over real HTTP, and what the store keeps."""

from __future__ import annotations

import email.utils
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest_server import (
    DEVICE,
    FLEET,
    SCOPED_AKID,
    SCOPED_SECRET,
    TOKEN,
    TOKEN_AKID,
    TOKEN_SECRET,
    client,
    heartbeat,
    make_server,
    server_fixture,  # noqa: F401 - the fixture
)

from edgetelemetry.server import EndpointServer

DEPLOYMENT = {
    "DeploymentName": "rollout-7",
    "Type": "Model",
    "FailureHandlingPolicy": "ROLLBACK_ON_FAILURE",
    "Definitions": [
        {
            "ModelHandle": "resnet18-v2",
            "S3Url": "s3://models-bucket/resnet18/v2.tar.gz",
            "Checksum": {"Type": "SHA1", "Sum": "0a1b2c3d"},
            "State": "DEPLOY",
        }
    ],
}


def error_of(call: Any, **params: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        call(**params)
    response = info.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def test_all_three_operations_succeed(server: EndpointServer) -> None:
    server.store.put_deployment(DEPLOYMENT, fleets=[FLEET])
    edge = client(server.url)

    sent = edge.send_heartbeat(**heartbeat())
    assert sent["ResponseMetadata"]["HTTPStatusCode"] == 200

    reg = edge.get_device_registration(DeviceName=DEVICE, DeviceFleetName=FLEET)
    assert reg["DeviceRegistration"] == "REGISTERED"
    assert reg["CacheTTL"] == "3600"  # seconds, as a string (CacheTTLSeconds is a string shape)

    deps = edge.get_deployments(DeviceName=DEVICE, DeviceFleetName=FLEET)
    assert deps["Deployments"] == [DEPLOYMENT]
    # a device of another fleet, not targeted, gets none
    other = client(server.url, SCOPED_AKID, SCOPED_SECRET)
    assert (
        other.get_deployments(DeviceName="cam-b1", DeviceFleetName="fleet-b")["Deployments"] == []
    )


def test_every_answer_has_a_date_header_from_the_server_clock() -> None:
    fake_now = 1_800_000_000.0  # the device corrects its clock from this
    srv = make_server(clock=lambda: fake_now)
    with srv:
        from conftest_server import post

        answer = post(srv.port, "SendHeartbeat", b"{}", {"Host": "x"})
        assert answer.status == 403
        date = email.utils.parsedate_to_datetime(answer.headers["date"])
        assert date.timestamp() == fake_now
        assert answer.headers["date"].endswith(" GMT")


def test_heartbeat_round_trips_into_the_store(server: EndpointServer) -> None:
    edge = client(server.url)
    t0 = float(int(time.time()) - 60)  # boto3 sends whole epoch seconds
    params = heartbeat(
        AgentVersion="2.1.0",
        AgentMetrics=[{"MetricName": "spool-bytes", "Value": 4096.0, "Timestamp": t0}],
        Models=[
            {
                "ModelName": "resnet18",
                "ModelVersion": "1.0",
                "LatestSampleTime": t0 - 5,
                "LatestInference": t0,
                "ModelMetrics": [
                    {
                        "MetricName": "latency-ms-p99",
                        "Value": 10.0 + i,
                        "Timestamp": t0 + i,
                        "Dimension": "camera-front/left",
                    }
                    for i in range(3)
                ],
            },
            {"ModelName": "yolo-tiny", "ModelVersion": "3", "LatestInference": t0 + 1},
        ],
        DeploymentResult={
            "DeploymentName": "rollout-7",
            "DeploymentStatus": "SUCCESS",
            "DeploymentStatusMessage": "ok",
            "DeploymentStartTime": t0 - 30,
            "DeploymentEndTime": t0 - 20,
            "DeploymentModels": [
                {
                    "ModelHandle": "resnet18-v2",
                    "ModelName": "resnet18",
                    "ModelVersion": "1.0",
                    "DesiredState": "DEPLOY",
                    "State": "DEPLOY",
                    "Status": "SUCCESS",
                }
            ],
        },
    )
    edge.send_heartbeat(**params)
    store = server.store

    devices = {d.name: d for d in store.devices()}
    assert devices[DEVICE].fleet == FLEET
    assert devices[DEVICE].agent_version == "2.1.0"
    assert devices[DEVICE].last_heartbeat is not None
    assert abs(devices[DEVICE].last_heartbeat - time.time()) < 10
    assert devices["cam-2"].last_heartbeat is None  # registered, never heard from

    models = {m.name: m for m in store.models(DEVICE)}
    assert set(models) == {"resnet18", "yolo-tiny"}
    assert models["resnet18"].latest_inference == pytest.approx(t0)
    assert models["resnet18"].latest_sample_time == pytest.approx(t0 - 5)
    assert models["yolo-tiny"].version == "3"

    series = store.metric_series(DEVICE, "resnet18", "latency-ms-p99")
    assert [p.value for p in series] == [10.0, 11.0, 12.0]
    assert [p.timestamp for p in series] == pytest.approx([t0, t0 + 1, t0 + 2])
    assert {p.dimension for p in series} == {"camera-front/left"}
    assert [
        p.value for p in store.metric_series(DEVICE, "resnet18", "latency-ms-p99", since=t0 + 1)
    ] == [11.0, 12.0]
    agent = store.metric_series(DEVICE, None, "spool-bytes")
    assert [p.value for p in agent] == [4096.0]
    assert store.metric_series(DEVICE, "resnet18", "spool-bytes") == []

    results = store.deployment_results(DEVICE)
    assert len(results) == 1
    assert results[0].deployment_name == "rollout-7"
    assert results[0].deployment_status == "SUCCESS"
    assert results[0].start_time == pytest.approx(t0 - 30)
    assert results[0].models[0]["ModelHandle"] == "resnet18-v2"

    # a second heartbeat moves "latest" and keeps the history
    edge.send_heartbeat(**heartbeat(AgentVersion="2.2"))
    assert {d.name: d for d in store.devices()}[DEVICE].agent_version == "2.2"
    assert store.heartbeat_count(DEVICE) == 2


def test_pattern_invalid_metric_name_is_a_validation_exception(server: EndpointServer) -> None:
    # boto3 checks types and minimum lengths only: 'latency_ms' passes it and reaches the server.
    edge = client(server.url)
    params = heartbeat(AgentMetrics=[{"MetricName": "latency_ms", "Value": 1.0}])
    status, code, message = error_of(edge.send_heartbeat, **params)
    assert (status, code) == (400, "ValidationException")
    assert "AgentMetrics[0].MetricName" in message and "latency_ms" in message
    assert server.store.heartbeat_count() == 0  # nothing stored from a refused request


@pytest.mark.parametrize(
    "params",
    [
        {"AgentVersion": "1.0-beta"},  # hyphen not allowed in a version
        {"DeviceName": "x" * 64},  # over the 63 maximum
        {"Models": [{"ModelName": "res_net"}]},
        {"AgentMetrics": [{"MetricName": "latency", "Value": 1.0, "Dimension": "-bad"}]},
    ],
)
def test_other_invalid_fields(server: EndpointServer, params: dict[str, Any]) -> None:
    edge = client(server.url)
    status, code, _ = error_of(edge.send_heartbeat, **heartbeat(**params))
    assert (status, code) == (400, "ValidationException")


def test_unregistered_device_and_wrong_fleet_are_refused(server: EndpointServer) -> None:
    edge = client(server.url)
    for call, extra in (
        (edge.send_heartbeat, {"AgentVersion": "1.0"}),
        (edge.get_device_registration, {}),
        (edge.get_deployments, {}),
    ):
        status, code, message = error_of(call, DeviceName="ghost-7", DeviceFleetName=FLEET, **extra)
        assert (status, code) == (400, "ValidationException")
        assert "ghost-7" in message and "not registered" in message
        status, code, message = error_of(call, DeviceName="cam-b1", DeviceFleetName=FLEET, **extra)
        assert (status, code) == (400, "ValidationException")
        assert "another fleet" in message
    assert server.store.heartbeat_count() == 0


def test_deregistered_device(server: EndpointServer) -> None:
    server.store.deregister_devices(["cam-2"])
    edge = client(server.url)
    reg = edge.get_device_registration(DeviceName="cam-2", DeviceFleetName=FLEET)
    assert reg["DeviceRegistration"] == "DEREGISTERED"  # answered truthfully, not refused
    status, code, _ = error_of(edge.send_heartbeat, **heartbeat(device="cam-2"))
    assert (status, code) == (400, "ValidationException")
    status, code, _ = error_of(edge.get_deployments, DeviceName="cam-2", DeviceFleetName=FLEET)
    assert (status, code) == (400, "ValidationException")
    server.store.register_devices(FLEET, ["cam-2"])  # registering again lets it back in
    edge.send_heartbeat(**heartbeat(device="cam-2"))


def test_auto_register_for_demos() -> None:
    with make_server(auto_register=True) as srv:
        edge = client(srv.url)
        edge.send_heartbeat(**heartbeat(device="new-device", fleet="new-fleet"))
        assert (
            edge.get_device_registration(DeviceName="new-device", DeviceFleetName="new-fleet")[
                "DeviceRegistration"
            ]
            == "REGISTERED"
        )
        names = {(d.name, d.fleet) for d in srv.store.devices()}
        assert ("new-device", "new-fleet") in names
        # auto-registration never moves a device between fleets
        status, code, _ = error_of(
            edge.send_heartbeat, **heartbeat(device=DEVICE, fleet="new-fleet")
        )
        assert (status, code) == (400, "ValidationException")


def test_key_scoped_to_fleets_gets_access_denied(server: EndpointServer) -> None:
    scoped = client(server.url, SCOPED_AKID, SCOPED_SECRET)
    scoped.send_heartbeat(**heartbeat(device="cam-b1", fleet="fleet-b"))
    status, code, message = error_of(scoped.send_heartbeat, **heartbeat())
    assert (status, code) == (403, "AccessDeniedException")
    assert FLEET in message


def test_session_token_credentials(server: EndpointServer) -> None:
    client(server.url, TOKEN_AKID, TOKEN_SECRET, token=TOKEN).send_heartbeat(**heartbeat())
    for token in (None, "not-the-token"):
        edge = client(server.url, TOKEN_AKID, TOKEN_SECRET, token=token)
        status, code, _ = error_of(edge.send_heartbeat, **heartbeat())
        assert (status, code) == (403, "UnrecognizedClientException")
    # a long-term key presenting a token is not that key
    edge = client(server.url, token="some-token")
    status, code, _ = error_of(edge.send_heartbeat, **heartbeat())
    assert (status, code) == (403, "UnrecognizedClientException")


def test_wrong_access_key_and_wrong_secret_through_boto3(server: EndpointServer) -> None:
    status, code, _ = error_of(
        client(server.url, key="AKIDUNKNOWN99999").send_heartbeat, **heartbeat()
    )
    assert (status, code) == (403, "UnrecognizedClientException")
    status, code, message = error_of(
        client(server.url, secret="wrong").send_heartbeat, **heartbeat()
    )
    assert (status, code) == (403, "InvalidSignatureException")
    assert "signature" in message.lower()
    status, code, _ = error_of(client(server.url, region="eu-west-1").send_heartbeat, **heartbeat())
    assert (status, code) == (403, "InvalidSignatureException")


def test_throttling() -> None:
    with make_server(rate_limit=0.001, burst=3) as srv:
        edge = client(srv.url)
        for _ in range(3):
            edge.get_device_registration(DeviceName=DEVICE, DeviceFleetName=FLEET)
        status, code, _ = error_of(
            edge.get_device_registration, DeviceName=DEVICE, DeviceFleetName=FLEET
        )
        assert (status, code) == (429, "ThrottlingException")
        # per key: another key is not throttled
        client(srv.url, SCOPED_AKID, SCOPED_SECRET).get_device_registration(
            DeviceName="cam-b1", DeviceFleetName="fleet-b"
        )


def test_concurrent_heartbeats_are_all_stored(server: EndpointServer) -> None:
    n_threads, per_thread = 8, 10
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            edge = client(server.url)
            for j in range(per_thread):
                params = heartbeat()
                params["Models"][0]["ModelMetrics"][0]["Value"] = float(i * 1000 + j)
                edge.send_heartbeat(**params)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert server.store.heartbeat_count(DEVICE) == n_threads * per_thread
    values = sorted(
        p.value for p in server.store.metric_series(DEVICE, "resnet18", "latency-ms-p99")
    )
    assert values == sorted(
        float(i * 1000 + j) for i in range(n_threads) for j in range(per_thread)
    )


def test_oversized_heartbeat_is_refused_with_413_not_a_reset() -> None:
    with make_server(max_body=4096) as srv:
        edge = client(srv.url)
        metrics = [{"MetricName": f"metric-{i:04d}", "Value": float(i)} for i in range(200)]
        status, code, message = error_of(edge.send_heartbeat, **heartbeat(AgentMetrics=metrics))
        assert (status, code) == (413, "RequestEntityTooLargeException")
        assert "4096" in message
        edge.send_heartbeat(**heartbeat())  # the client recovers on a new connection
