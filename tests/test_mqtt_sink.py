"""The MQTT sink against a real mosquitto on loopback (tests/realservices.py): QoS 1 with the
PUBACK as the acknowledgement, the topic template, OTLP/JSON that parses back with the official
classes, a broker outage drained from the spool, TLS with a private CA, and the size bound."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from realservices import HOST, Mosquitto, _write_self_signed_tls, free_port
from test_agent_sinks import (  # noqa: F401 - fixtures
    AKID,
    DEVICE,
    FLEET,
    SECRET,
    _clean_env,
    rec_fixture,
    record_some,
    server_fixture,
    stored_windows,
)

from edgetelemetry import Recorder
from edgetelemetry.agent import Agent
from edgetelemetry.server import EndpointServer

TOPIC = f"edgetelemetry/{FLEET}/{DEVICE}/metrics"


class Subscriber:
    """A QoS 1 subscriber collecting (topic, payload) on ``topic``."""

    def __init__(self, broker: Mosquitto, topic: str, **tls: Any) -> None:
        self.messages: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
        if tls:
            self.client.tls_set(**tls)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload, m.qos))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def take(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, int]]:
        return [self.messages.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def spool_seq(payload: bytes) -> int:
    request = json_format.Parse(payload, ExportMetricsServiceRequest())
    gauges = {m.name: m.gauge.data_points[0] for m in
              request.resource_metrics[0].scope_metrics[0].metrics if m.HasField("gauge")}
    return int(gauges["edgetelemetry.agent.spool_seq"].as_double)


def make_agent(tmp_path: Path, server: EndpointServer, rec: Recorder, mqtt_url: str,
               **kw: Any) -> Agent:
    return Agent(rec, device_name=DEVICE, fleet=FLEET, endpoint_url=server.url,
                 spool_dir=tmp_path / "spool", aws_access_key_id=AKID,
                 aws_secret_access_key=SECRET, fsync="never", backlog_rate=1000, jitter=0,
                 max_attempts=1, backoff_base_s=0, backoff_cap_s=0, send_backoff_cap_s=0,
                 mqtt_url=mqtt_url, mqtt_timeout_s=2, **kw)


def test_windows_reach_the_broker_at_qos1_as_otlp_json(
        tmp_path: Path, server: EndpointServer, rec: Recorder,
        mosquitto_broker: Mosquitto) -> None:
    sub = Subscriber(mosquitto_broker, "edgetelemetry/#")
    try:
        with make_agent(tmp_path, server, rec, mosquitto_broker.url) as agent:
            seqs = []
            for i in range(3):
                record_some(rec, 5 + i)
                result = agent.tick()
                assert result.sinks[0].records_acked == 1, result.sinks
                seqs.append(result.spooled_seq)
            assert agent.stats()["mqtt-send-successes"] == 3
            assert agent.spool.sink_stats("mqtt")["delivered"] == 3
            got = sub.take(3)
    finally:
        sub.close()
    assert {t for t, _, _ in got} == {TOPIC} and {q for _, _, q in got} == {1}
    assert [spool_seq(p) for _, p, _ in got] == seqs
    request = json_format.Parse(got[0][1], ExportMetricsServiceRequest())
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    assert metric.name == "latency" and metric.exponential_histogram.data_points[0].count == 5


def test_broker_outage_is_drained_from_the_spool(tmp_path: Path, server: EndpointServer,
                                                 rec: Recorder) -> None:
    broker = Mosquitto(port=free_port()).start()
    try:
        with make_agent(tmp_path, server, rec, broker.url) as agent:
            spooled = [agent.tick().spooled_seq]
            broker.stop()
            for _ in range(4):
                result = agent.tick()
                spooled.append(result.spooled_seq)
                assert result.failure is None  # the heartbeat goes on
            assert agent.spool.sink_stats("mqtt")["records"] == 4
            assert agent.stats()["mqtt-send-failures-connection"] >= 1
            broker.start()
            sub = Subscriber(broker, TOPIC)
            try:
                result = agent.tick()
                spooled.append(result.spooled_seq)
                assert result.sinks[0].records_acked == 5
                got = Counter(spool_seq(p) for _, p, _ in sub.take(5))
            finally:
                sub.close()
            assert got == Counter(spooled[1:])
            st = agent.spool.sink_stats("mqtt")
            assert st["records"] == 0 and st["delivered"] == 6 and st["lost"] == 0
        assert set(stored_windows(server)) >= set(spooled)
    finally:
        broker.stop()


class TlsMosquitto(Mosquitto):
    """mosquitto with one TLS listener, its certificate signed by a throwaway CA."""

    def _setup(self) -> None:
        assert self.workdir is not None
        self.ca_file = _write_self_signed_tls(self.workdir, HOST)

    def _configure(self) -> None:
        assert self.workdir is not None
        (self.workdir / "mosquitto.conf").write_text(
            f"listener {self.port} {self.host}\n"
            f"cafile {self.workdir / 'ca.crt'}\n"
            f"certfile {self.workdir / 'server.crt'}\n"
            f"keyfile {self.workdir / 'server.key'}\n"
            "allow_anonymous true\npersistence false\nlog_dest stderr\n")

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"


def test_tls_with_a_private_ca(tmp_path: Path, server: EndpointServer, rec: Recorder) -> None:
    with TlsMosquitto() as broker:
        ca = tmp_path / "ca.crt"
        ca.write_bytes(broker.ca_file.read_bytes())
        sub = Subscriber(broker, TOPIC, ca_certs=str(ca))
        try:
            with make_agent(tmp_path, server, rec, broker.url, mqtt_ca_file=str(ca),
                            mqtt_payload="otlp-proto") as agent:
                seq = agent.tick().spooled_seq
                (topic, payload, qos), = sub.take(1)
        finally:
            sub.close()
        request = ExportMetricsServiceRequest()
        request.ParseFromString(payload)
        gauges = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
        assert gauges["edgetelemetry.agent.spool_seq"].gauge.data_points[0].as_double == seq
        # without the CA the broker's certificate is refused: kept for a retry, not sent
        with make_agent(tmp_path / "b", server, rec, broker.url) as agent:
            result = agent.tick()
            assert result.sinks[0].failure is not None and result.sinks[0].records_acked == 0
            assert agent.spool.sink_stats("mqtt")["records"] == 1


def test_a_message_over_the_bound_is_dead_lettered_for_mqtt_only(
        tmp_path: Path, server: EndpointServer, rec: Recorder,
        mosquitto_broker: Mosquitto) -> None:
    for i in range(12):
        rec.histogram("latency", unit="ms", model="resnet18", version=f"1.{i}").record(2.0)
    with make_agent(tmp_path, server, rec, mosquitto_broker.url,
                    mqtt_max_payload_bytes=1024) as agent:
        result = agent.tick()
        assert result.sinks[0].records_dead_lettered == 1
        assert agent.spool.sink_stats("mqtt")["dead_letters"] == 1
        assert stored_windows(server)[result.spooled_seq] == 1  # the heartbeat got it
        assert agent.stats()["mqtt-send-failures-too-large"] == 1
