"""The MQTT sink: each spooled window published at QoS 1 to a broker (mosquitto, AWS IoT Core)
and counted delivered once the broker's PUBACK came back.

The message is the window's OTLP request: OTLP/JSON by default (what IoT rules read), or its
protobuf bytes (``mqtt_payload``).  The topic is ``mqtt_topic`` with ``{device}`` and ``{fleet}``
filled in.  ``mqtts://`` turns TLS on (``mqtt_ca_file``; ``mqtt_cert_file``/``mqtt_key_file``
for mutual TLS, as AWS IoT Core wants).  paho-mqtt (the ``mqtt`` extra) is imported when the
sink first connects.

``send`` never raises: connect failures, refused CONNACKs and a PUBACK that does not come within
``timeout_s`` are RETRY (the connection is dropped, with paho's copy of the message: a broker
that did get it sees it again with the retry, at least once); a message over
``max_payload_bytes`` is FATAL (a broker would drop it or the connection: dead-lettered).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..otlp import OtlpIdentity, build_metrics_request, request_json
from ..snapshot import Snapshot
from .sender import Outcome, SendResult
from .sink_config import MQTT_SINK, mqtt_address

if TYPE_CHECKING:
    from paho.mqtt.client import Client

    from .config import AgentConfig

__all__ = ["MqttSink"]

log = logging.getLogger(__name__)

_STAT_KEYS = ("send-attempts", "send-successes", "send-failures-connection",
              "send-failures-refused", "send-failures-timeout", "send-failures-too-large",
              "bytes-sent")


class MqttSink:
    """Publish windows to ``url``'s broker on ``topic`` at QoS 1.  Thread-safe."""

    name = MQTT_SINK

    def __init__(
        self,
        url: str,
        identity: OtlpIdentity,
        *,
        topic: str = "edgetelemetry/{fleet}/{device}/metrics",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        payload_format: str = "otlp-json",
        timeout_s: float = 10.0,
        max_payload_bytes: int = 128 << 10,
        scale: int | None = None,
    ) -> None:
        if payload_format not in ("otlp-json", "otlp-proto"):
            raise ValueError(f"payload_format must be 'otlp-json' or 'otlp-proto', not "
                             f"{payload_format!r}")
        self.url = url
        self.identity = identity
        self.topic = topic.format(device=identity.device_name, fleet=identity.fleet_name)
        self.scale = scale
        self._host, self._port, self._tls = mqtt_address(url)
        self._client_id = client_id or identity.device_name
        self._auth = (username, password)
        self._tls_files = (ca_file, cert_file, key_file)
        self._json = payload_format == "otlp-json"
        self._timeout = float(timeout_s)
        self._max_payload = max_payload_bytes
        self._client: Client | None = None
        self._connected = threading.Event()
        self._answered = threading.Event()  # a CONNACK came, accepting or refusing
        self._refusal: str | None = None
        self._send_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._warned = False

    @classmethod
    def from_config(cls, config: AgentConfig, identity: OtlpIdentity) -> MqttSink:
        assert config.mqtt_url is not None
        scale = config.otlp_histogram_scale
        return cls(config.mqtt_url, identity, topic=config.mqtt_topic,
                   client_id=config.mqtt_client_id, username=config.mqtt_username,
                   password=config.mqtt_password, ca_file=config.mqtt_ca_file,
                   cert_file=config.mqtt_cert_file, key_file=config.mqtt_key_file,
                   payload_format=config.mqtt_payload, timeout_s=config.mqtt_timeout_s,
                   max_payload_bytes=config.mqtt_max_payload_bytes,
                   scale=None if scale == "auto" else int(scale))

    def payload(self, snap: Snapshot, metrics: Mapping[str, float]) -> bytes:
        request = build_metrics_request([snap], self.identity, agent_metrics=metrics,
                                        scale=self.scale)
        return request_json(request) if self._json else request.SerializeToString()

    def send(self, body: bytes) -> SendResult:
        with self._send_lock:
            self._bump("send-attempts")
            if len(body) > self._max_payload:
                return self._failed("send-failures-too-large", Outcome.FATAL, "TooLarge",
                                    f"{len(body)} bytes, over mqtt_max_payload_bytes="
                                    f"{self._max_payload}")
            try:
                client = self._connect()
            except OSError as exc:
                self.close()
                return self._failed("send-failures-connection", Outcome.RETRY,
                                    type(exc).__name__, str(exc))
            if client is None:
                refusal = self._refusal or f"no CONNACK within {self._timeout:g} s"
                stat = "send-failures-refused" if self._refusal else "send-failures-timeout"
                self.close()
                return self._failed(stat, Outcome.RETRY, "NotConnected", refusal)
            info = client.publish(self.topic, body, qos=1)
            try:
                info.wait_for_publish(self._timeout)
                published = info.is_published()
            except (ValueError, RuntimeError):
                published = False
            if not published:
                self.close()
                return self._failed("send-failures-timeout", Outcome.RETRY, "NoPuback",
                                    f"no PUBACK within {self._timeout:g} s (rc {info.rc})")
            self._bump("send-successes")
            self._bump("bytes-sent", len(body))
            self._warned = False
            return SendResult(Outcome.OK, 1)

    def stats(self) -> dict[str, float]:
        with self._stats_lock:
            return {k: float(v) for k, v in self._stats.items()}

    def close(self) -> None:
        client, self._client = self._client, None
        self._connected.clear()
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()

    def __repr__(self) -> str:
        return f"MqttSink({self.url!r}, topic={self.topic!r})"  # never the password

    # -- the connection -----------------------------------------------------------------------

    def _connect(self) -> Client | None:
        """The connected client (a new one if needed); None when no CONNACK accepted it."""
        if self._client is not None and self._client.is_connected():
            return self._client
        self.close()
        from paho.mqtt.client import Client
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        client = Client(CallbackAPIVersion.VERSION2, client_id=self._client_id,
                        clean_session=True, protocol=MQTTProtocolVersion.MQTTv311,
                        reconnect_on_failure=False)
        client.connect_timeout = self._timeout
        client.max_queued_messages_set(1)  # one message in flight: the spool keeps the rest
        username, password = self._auth
        if username is not None or password is not None:
            client.username_pw_set(username, password)
        if self._tls:
            ca_file, cert_file, key_file = self._tls_files
            client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
        self._refusal = None
        self._answered.clear()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        client.connect(self._host, self._port, keepalive=60)
        client.loop_start()
        self._answered.wait(self._timeout)
        return client if self._connected.is_set() else None

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._refusal = f"CONNACK refused: {reason}"
        else:
            self._connected.set()
        self._answered.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._connected.clear()

    def _failed(self, stat: str, outcome: Outcome, code: str, message: str) -> SendResult:
        self._bump(stat)
        level = logging.WARNING if not self._warned else logging.DEBUG
        self._warned = True
        log.log(level, "MQTT publish to %s:%d %s failed: %s %s", self._host, self._port,
                self.topic, code, message)
        return SendResult(outcome, 1, error_code=code, message=message,
                          retry_after_s=None)

    def _bump(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n
