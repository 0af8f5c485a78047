"""The settings of the agent's other sinks, OTLP and MQTT: their keys, rules and checks.

Flat keys beside the others in ``AgentConfig`` (so a keyword, an ``EDGETELEMETRY_*`` variable
and the JSON file all work the same way): a sink is on when its address is set
(``otlp_endpoint``, ``mqtt_url``).  ``otlp_headers`` and ``mqtt_password`` are secrets: never in
an error, a ``repr`` or a log line, and a file holding them must be private to its owner.
Every key is in ``docs/configuration.md``.
"""

from __future__ import annotations

import re
import string as text
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from .config_rules import Key, RuleError, choice, number, path, secret, string, url

__all__ = [
    "HEARTBEAT_SINK",
    "MQTT_SINK",
    "OTLP_SINK",
    "SINK_KEYS",
    "SINK_PATH_KEYS",
    "SINK_SECRET_KEYS",
    "mqtt_address",
    "sink_problems",
]

HEARTBEAT_SINK = "sagemaker-edge"
OTLP_SINK = "otlp"
MQTT_SINK = "mqtt"

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9:_.-]{1,128}$")
_TOPIC_FIELDS = ("device", "fleet")


def otlp_endpoint(raw: Any, from_text: bool) -> str:
    """An http(s) URL; without a path it gets OTLP's ``/v1/metrics``."""
    value: str = url(raw, from_text)
    parts = urlsplit(value)
    if parts.path in ("", "/"):
        value = value.rstrip("/") + "/v1/metrics"
    return value


def headers(raw: Any, from_text: bool) -> tuple[tuple[str, str], ...]:
    """A JSON object of header names to values; from the environment, OpenTelemetry's
    ``name=value,name2=value2`` with values percent-decoded (``OTEL_EXPORTER_OTLP_HEADERS``)."""
    rule = ("must be an object of HTTP header names to string values (in the environment: "
            "name=value,name2=value2, values percent-encoded)")
    if from_text and isinstance(raw, str):
        pairs = []
        for item in raw.split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            if not sep:
                raise RuleError(rule)
            pairs.append((name.strip(), unquote(value.strip())))
    elif isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, (tuple, list)) and all(
            isinstance(p, (tuple, list)) and len(p) == 2 for p in raw):
        pairs = [(p[0], p[1]) for p in raw]  # the resolved form, read back
    else:
        raise RuleError(rule)
    out = []
    for name, value in pairs:
        if not isinstance(name, str) or not _HEADER_NAME.match(name) \
                or not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise RuleError(rule + "; names are HTTP tokens, values one line")
        out.append((name.lower(), value))
    if not out:
        raise RuleError(rule)
    return tuple(out)


def histogram_scale(raw: Any, from_text: bool) -> int | str:
    rule = "must be 'auto' or an integer from 0 to 10 (the OTLP exponential histogram's scale)"
    if raw == "auto":
        return "auto"
    if from_text and isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 10:
        raise RuleError(rule)
    return raw


def mqtt_url(raw: Any, from_text: bool) -> str:
    rule = "must be mqtt://host[:port] or mqtts://host[:port] (TLS), e.g. mqtts://broker:8883"
    if not isinstance(raw, str):
        raise RuleError(rule)
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise RuleError(rule) from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise RuleError(rule)
    if parts.username or parts.password:
        raise RuleError("must not contain a user or password (use mqtt_username, "
                        "mqtt_password)")
    return raw


def topic(raw: Any, from_text: bool) -> str:
    rule = ("must be an MQTT topic without wildcards (+, #) or a leading $, where {device} and "
            "{fleet} stand for the device and fleet names, e.g. edgetelemetry/{fleet}/{device}")
    if not isinstance(raw, str) or not 1 <= len(raw) <= 1024 or raw.startswith("$") \
            or any(c in raw for c in "+#\0"):
        raise RuleError(rule)
    try:
        fields = [f for _, f, _, _ in text.Formatter().parse(raw) if f is not None]
    except ValueError:
        raise RuleError(rule) from None
    if any(f not in _TOPIC_FIELDS for f in fields):
        raise RuleError(rule)
    return raw


SINK_KEYS: dict[str, Key] = {
    "otlp_endpoint": Key(otlp_endpoint, "OTLP/HTTP metrics URL; turns the OTLP sink on"),
    "otlp_headers": Key(headers, "headers sent with every OTLP request (secret)"),
    "otlp_compression": Key(choice(("gzip", "none")), "OTLP request body compression"),
    "otlp_timeout_s": Key(number(0, 300, lo_open=True), "OTLP connect and read timeout"),
    "otlp_ca_bundle": Key(path, "CA bundle verifying otlp_endpoint's TLS"),
    "otlp_cert_file": Key(path, "client certificate for OTLP mutual TLS (PEM)"),
    "otlp_key_file": Key(path, "its private key (PEM)"),
    "otlp_histogram_scale": Key(histogram_scale, "exponential histogram scale"),
    "mqtt_url": Key(mqtt_url, "mqtt:// or mqtts:// broker; turns the MQTT sink on"),
    "mqtt_topic": Key(topic, "topic template ({device}, {fleet})"),
    "mqtt_client_id": Key(string(_CLIENT_ID, "must match [A-Za-z0-9:_.-]{1,128}", 128),
                          "MQTT client id (default: device_name)"),
    "mqtt_username": Key(string(max_len=256), "MQTT user name"),
    "mqtt_password": Key(secret, "MQTT password (secret)"),
    "mqtt_ca_file": Key(path, "CA verifying the broker (mqtts://; default: system)"),
    "mqtt_cert_file": Key(path, "client certificate for MQTT mutual TLS (PEM)"),
    "mqtt_key_file": Key(path, "its private key (PEM)"),
    "mqtt_payload": Key(choice(("otlp-json", "otlp-proto")), "MQTT message body"),
    "mqtt_timeout_s": Key(number(0, 300, lo_open=True), "MQTT connect and PUBACK timeout"),
    "mqtt_max_payload_bytes": Key(number(1024, 256 << 20, integer=True),
                                  "larger messages are dead-lettered (AWS IoT: 128 KiB)"),
}
SINK_SECRET_KEYS = frozenset({"otlp_headers", "mqtt_password"})
SINK_PATH_KEYS = ("otlp_ca_bundle", "otlp_cert_file", "otlp_key_file", "mqtt_ca_file",
                  "mqtt_cert_file", "mqtt_key_file")


def sink_problems(values: Mapping[str, Any]) -> list[str]:
    """What is wrong between the sink keys of a resolved config (an empty list if nothing)."""
    problems = []
    for sink, address in (("otlp", "otlp_endpoint"), ("mqtt", "mqtt_url")):
        if values.get(address) is None:
            stray = [k for k in SINK_KEYS if k.startswith(sink + "_") and k != address
                     and values.get(k) is not None and k in _NO_DEFAULT]
            if stray:
                problems.append(f"{', '.join(stray)} set but {address} is not (the {sink} "
                                "sink is on only when its address is set)")
        cert, key = f"{sink}_cert_file", f"{sink}_key_file"
        if (values.get(cert) is None) != (values.get(key) is None):
            problems.append(f"{cert} and {key} go together (mutual TLS)")
    mqtt = values.get("mqtt_url")
    tls_files = [k for k in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file")
                 if values.get(k) is not None]
    if mqtt is not None and tls_files and not mqtt.startswith("mqtts://"):
        problems.append(f"{', '.join(tls_files)} need a mqtts:// mqtt_url (TLS)")
    return problems


_NO_DEFAULT = frozenset({"otlp_headers", "otlp_ca_bundle", "otlp_cert_file", "otlp_key_file",
                         "mqtt_client_id", "mqtt_username", "mqtt_password", "mqtt_ca_file",
                         "mqtt_cert_file", "mqtt_key_file"})


def mqtt_address(mqtt: str) -> tuple[str, int, bool]:
    """``(host, port, tls)`` of an ``mqtt_url`` (ports 1883 and 8883 by default)."""
    parts = urlsplit(mqtt)
    tls = parts.scheme == "mqtts"
    assert parts.hostname is not None
    return parts.hostname, parts.port or (8883 if tls else 1883), tls
