"""The agent's configuration: one frozen, validated ``AgentConfig`` from keyword arguments,
``EDGETELEMETRY_*`` environment variables and a JSON file, in that order of precedence.

``AgentConfig.load(path=None, env=None, **overrides)`` reads the file named by ``path`` or by
``EDGETELEMETRY_CONFIG``; ``AgentConfig.from_sagemaker_edge_config(...)`` imports the original
Edge Manager agent's JSON instead.  Every key and rule is in ``docs/configuration.md``.

Errors are ``ConfigError`` and name the key, where its value came from and the rule it breaks;
an unknown key gets the closest valid one suggested.  Secrets (``aws_secret_access_key``,
``aws_session_token``, ``aws_access_key_id``) never appear in an error or a ``repr``, and a file
that holds one must be private to its owner.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import read_checked
from ..errors import EdgeTelemetryError
from . import iot_names
from .config_rules import (
    Key,
    RuleError,
    boolean,
    choice,
    name_rule,
    number,
    path,
    secret,
    string,
    text_value,
    url,
)
from .segment_config import (
    SEGMENT_KEYS,
    SEGMENT_PATH_KEYS,
    default_segment_path,
    segment_problems,
)
from .sink_config import (
    HEARTBEAT_SINK,
    MQTT_SINK,
    OTLP_SINK,
    SINK_KEYS,
    SINK_PATH_KEYS,
    SINK_SECRET_KEYS,
    sink_problems,
)

__all__ = [
    "AgentConfig",
    "ConfigError",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SAGEMAKER_EDGE_KEYS",
    "default_spool_dir",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "EDGETELEMETRY_"
CONFIG_ENV = "EDGETELEMETRY_CONFIG"  # path of the JSON config file
AWS_KEYS = frozenset({"aws_access_key_id", "aws_secret_access_key", "aws_session_token"})
SECRET_KEYS = AWS_KEYS | SINK_SECRET_KEYS
FSYNC_POLICIES = ("always", "batch", "never")
CREDENTIAL_SOURCES = ("auto", "default", "profile", "static", "iot")
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_PROFILE = re.compile(r"^[\w.@+-]{1,64}$")
_IOT_KEYS = ("iot_endpoint", "iot_role_alias", "iot_thing_name", "iot_cert_file",
             "iot_key_file", "iot_ca_file")
_PATH_KEYS = ("spool_dir", "ca_bundle", "iot_cert_file", "iot_key_file", "iot_ca_file",
              *SINK_PATH_KEYS, *SEGMENT_PATH_KEYS)


class ConfigError(EdgeTelemetryError, ValueError):
    """A configuration that cannot be used; the message names the key and the rule."""


def default_spool_dir() -> str:
    """``$STATE_DIRECTORY/spool`` under systemd (``StateDirectory=``), else
    ``/var/lib/edgetelemetry/spool`` for root (a system service), else the XDG state dir.

    All survive reboots (unlike ``/run`` or ``/tmp``), which the spool exists for.
    """
    state_directory = (os.environ.get("STATE_DIRECTORY") or "").split(":")[0]
    if state_directory:
        return os.path.join(state_directory, "spool")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/edgetelemetry/spool"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                              ".local", "state")
    return os.path.join(state, "edgetelemetry", "spool")


KEYS: dict[str, Key] = {
    "device_name": Key(name_rule, "this device's name at the endpoint (required)"),
    "fleet_name": Key(name_rule, "the device fleet's name (required)"),
    "endpoint_url": Key(url, "the Edge Manager-compatible endpoint (required)"),
    "region": Key(string(_REGION, "must look like an AWS region, e.g. us-east-1", 32),
                   "SigV4 signing region"),
    "interval_s": Key(number(1, 86400), "seconds between heartbeats"),
    "jitter": Key(number(0, 1), "random fraction added to or taken from each interval"),
    "spool_dir": Key(path, "directory of the on-disk spool"),
    "spool_max_bytes": Key(number(65536, 1 << 40, integer=True), "spool size bound"),
    "spool_max_age_s": Key(number(60, 366 * 86400), "records older than this are dropped"),
    "fsync": Key(choice(FSYNC_POLICIES), "spool durability policy"),
    "backlog_rate": Key(number(0, 1000, lo_open=True), "requests/s while draining a backlog"),
    "max_attempts": Key(number(1, 20, integer=True), "requests per send, corrections included"),
    "connect_timeout_s": Key(number(0, 300, lo_open=True), "TCP/TLS connect timeout"),
    "read_timeout_s": Key(number(0, 300, lo_open=True), "wait for an answer"),
    "backoff_base_s": Key(number(0, 60), "first retry's full-jitter ceiling"),
    "backoff_cap_s": Key(number(0, 3600), "largest backoff ceiling"),
    "ca_bundle": Key(path, "CA bundle verifying endpoint_url's TLS (default: system)"),
    "credentials_source": Key(choice(CREDENTIAL_SOURCES), "where credentials come from"),
    "profile": Key(string(_PROFILE, r"must match [\w.@+-]{1,64}", 64),
                    "AWS shared-config profile"),
    "aws_access_key_id": Key(secret, "static access key id"),
    "aws_secret_access_key": Key(secret, "static secret access key"),
    "aws_session_token": Key(secret, "static session token"),
    "iot_endpoint": Key(string(max_len=2048), "IoT credentials provider endpoint"),
    "iot_role_alias": Key(string(iot_names.ROLE_ALIAS, r"must match [\w=,@-]{1,128}", 128),
                           "IoT role alias"),
    "iot_thing_name": Key(string(iot_names.THING_NAME, "must match [a-zA-Z0-9:_-]{1,128}",
                                   128), "IoT thing name (default: device_name)"),
    "iot_cert_file": Key(path, "device certificate (PEM)"),
    "iot_key_file": Key(path, "device private key (PEM)"),
    "iot_ca_file": Key(path, "CA verifying the IoT endpoint (default: system)"),
    "iot_timeout_s": Key(number(0, 300, lo_open=True), "IoT credentials request timeout"),
    "log_verbose": Key(boolean, "DEBUG logging"),
    **SINK_KEYS,  # OTLP and MQTT (sink_config.py)
    **SEGMENT_KEYS,  # edgetelemetry agent's shared recorder (segment_config.py)
}
REQUIRED = ("device_name", "fleet_name", "endpoint_url")


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


# -- the original agent's keys ---------------------------------------------------------------

# sagemaker key -> our key.  Everything else under sagemaker_edge_ is accepted and ignored.
SAGEMAKER_EDGE_KEYS: dict[str, str] = {
    "sagemaker_edge_core_device_name": "device_name",
    "sagemaker_edge_core_device_fleet_name": "fleet_name",
    "sagemaker_edge_core_region": "region",
    "sagemaker_edge_provider_aws_iot_cred_endpoint": "iot_endpoint",
    "sagemaker_edge_provider_aws_cert_file": "iot_cert_file",
    "sagemaker_edge_provider_aws_cert_pk_file": "iot_key_file",
    "sagemaker_edge_provider_aws_ca_cert_file": "iot_ca_file",
    "sagemaker_edge_log_verbose": "log_verbose",
}
_SAGEMAKER_PREFIX = "sagemaker_edge_"
_SAGEMAKER_PROVIDERS = ("Aws", "None", "Custom")


# -- the config -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AgentConfig:
    """Validated agent settings; build with ``load``, ``from_sagemaker_edge_config`` or directly.

    Direct construction validates too (``AgentConfig(device_name=..., ...)``).  ``repr``
    masks secrets.  ``credentials_source`` is resolved: ``"auto"`` becomes ``"iot"``,
    ``"static"``, ``"profile"`` or ``"default"`` by which keys are set.
    """

    device_name: str
    fleet_name: str
    endpoint_url: str
    region: str = "us-east-1"
    interval_s: float = 60.0
    jitter: float = 0.1
    spool_dir: str = field(default_factory=default_spool_dir)
    spool_max_bytes: int = 64 << 20
    spool_max_age_s: float = 7 * 86400.0
    fsync: str = "always"
    backlog_rate: float = 2.0
    max_attempts: int = 3
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    ca_bundle: str | None = None
    credentials_source: str = "auto"
    profile: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    iot_endpoint: str | None = None
    iot_role_alias: str | None = None
    iot_thing_name: str | None = None
    iot_cert_file: str | None = None
    iot_key_file: str | None = None
    iot_ca_file: str | None = None
    iot_timeout_s: float = 10.0
    log_verbose: bool = False
    otlp_endpoint: str | None = None
    otlp_headers: tuple[tuple[str, str], ...] | None = None
    otlp_compression: str = "gzip"
    otlp_timeout_s: float = 10.0
    otlp_ca_bundle: str | None = None
    otlp_cert_file: str | None = None
    otlp_key_file: str | None = None
    otlp_histogram_scale: int | str = "auto"
    mqtt_url: str | None = None
    mqtt_topic: str = "edgetelemetry/{fleet}/{device}/metrics"
    mqtt_client_id: str | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_ca_file: str | None = None
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    mqtt_payload: str = "otlp-json"
    mqtt_timeout_s: float = 10.0
    mqtt_max_payload_bytes: int = 128 << 10
    segment_path: str = field(default_factory=default_segment_path)
    segment_group: str | None = None
    segment_mode: int = 0o660
    segment_replace: bool = False
    max_processes: int = 64
    max_series: int = 256
    max_threads: int = 64
    ring_capacity: int = 2048
    buckets_per_octave: int = 36
    names_bytes: int | None = None
    histogram_pages: int | None = None
    lock_timeout_s: float = 0.1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            object.__setattr__(self, f.name, _check(f.name, value, "argument"))
        for key in REQUIRED:
            if getattr(self, key) is None:
                raise ConfigError(f"{key} is required")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ConfigError(f"backoff_cap_s ({self.backoff_cap_s:g}) must be at least "
                              f"backoff_base_s ({self.backoff_base_s:g})")
        object.__setattr__(self, "credentials_source", self._resolve_credentials())
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        problems = sink_problems(values) + segment_problems(values)
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sinks this config turns on, by the names their spool cursors have."""
        return (HEARTBEAT_SINK,) + ((OTLP_SINK,) if self.otlp_endpoint else ()) \
            + ((MQTT_SINK,) if self.mqtt_url else ())

    def _resolve_credentials(self) -> str:
        iot = [k for k in _IOT_KEYS if getattr(self, k) is not None]
        static = [k for k in sorted(AWS_KEYS) if getattr(self, k) is not None]
        profile = ["profile"] if self.profile is not None else []
        groups = {"iot": iot, "static": static, "profile": profile}
        source = self.credentials_source
        if source == "auto":
            present = [name for name, keys in groups.items() if keys]
            if len(present) > 1:
                raise ConfigError(
                    "credentials: settings for more than one source are set ("
                    + "; ".join(f"{n}: {', '.join(groups[n])}" for n in present)
                    + "); keep one, or choose with credentials_source")
            source = present[0] if present else "default"
        if source == "iot":
            # The original agent used the device name as the thing name.
            if self.iot_thing_name is None:
                object.__setattr__(self, "iot_thing_name", self.device_name)
            missing = [k for k in ("iot_endpoint", "iot_role_alias", "iot_cert_file",
                                   "iot_key_file") if getattr(self, k) is None]
            if missing:
                raise ConfigError(f"credentials_source 'iot' needs {', '.join(missing)}")
            try:
                _, alias = iot_names.split_url(str(self.iot_endpoint))
            except ValueError as exc:
                raise ConfigError(f"iot_endpoint: {exc}") from None
            if alias is not None and alias != self.iot_role_alias:
                raise ConfigError(f"iot_endpoint names role alias {alias!r} but "
                                  f"iot_role_alias is {self.iot_role_alias!r}")
        elif source == "static":
            if self.aws_access_key_id is None or self.aws_secret_access_key is None:
                raise ConfigError("credentials_source 'static' needs both aws_access_key_id "
                                  "and aws_secret_access_key")
        elif source == "profile" and self.profile is None:
            raise ConfigError("credentials_source 'profile' needs profile")
        return source

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = "'***'" if f.name in SECRET_KEYS and value is not None else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"AgentConfig({', '.join(parts)})"

    __str__ = __repr__

    # -- sources ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> AgentConfig:
        """Keyword arguments > ``EDGETELEMETRY_*`` variables > the JSON file.

        The file is ``path``, else ``$EDGETELEMETRY_CONFIG``, else none.  ``env`` defaults to
        ``os.environ``.  Relative paths in the file are relative to the file's directory.
        """
        environ = os.environ if env is None else env
        layers: list[tuple[dict[str, Any], str]] = []
        file_path = path if path is not None else environ.get(CONFIG_ENV) or None
        if file_path is not None:
            data = _read_json_file(Path(file_path))
            _refuse_unknown(data.keys(), f"config file {os.fspath(file_path)}")
            layers.append((_relative_to(data, Path(file_path)), f"config file {file_path}"))
        return cls._merge(layers, environ, overrides)

    @classmethod
    def from_sagemaker_edge_config(
        cls,
        source: str | os.PathLike[str] | Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> AgentConfig:
        """Import the original Edge Manager agent's JSON config (a path or a decoded dict).

        Mapped keys are listed in ``SAGEMAKER_EDGE_KEYS``; other ``sagemaker_edge_*`` keys are
        accepted and reported once at INFO as ignored; any other key is refused.  The IoT role
        alias defaults to ``SageMakerEdge-<fleet>`` (the alias Edge Manager created for a fleet)
        unless the credentials endpoint URL names one.  ``endpoint_url`` is not in that file
        (the hosted service is gone): pass it, or set ``EDGETELEMETRY_ENDPOINT_URL``.
        Precedence: keyword arguments > environment > the imported file.
        """
        environ = os.environ if env is None else env
        if isinstance(source, Mapping):
            data, where, base = dict(source), "sagemaker_edge config", None
        else:
            data, where = _read_json_file(Path(source)), f"sagemaker_edge config {source}"
            base = Path(source)
        mapped: dict[str, Any] = {}
        ignored: list[str] = []
        unknown = []
        for key, value in data.items():
            if key in SAGEMAKER_EDGE_KEYS:
                mapped[SAGEMAKER_EDGE_KEYS[key]] = _sagemaker_value(key, value, where)
            elif key == "sagemaker_edge_provider_provider":
                if value not in _SAGEMAKER_PROVIDERS:
                    raise ConfigError(f"{key} (from {where}): must be one of "
                                      f"{', '.join(_SAGEMAKER_PROVIDERS)}, got {value!r}")
                ignored.append(key)
            elif key.startswith(_SAGEMAKER_PREFIX):
                ignored.append(key)
            else:
                unknown.append(key)
        if unknown:
            valid = list(SAGEMAKER_EDGE_KEYS) + ["sagemaker_edge_provider_provider"]
            raise ConfigError(_unknown_message(unknown[0], valid, where)
                              + " (only sagemaker_edge_* keys belong in that file; pass "
                              "edgetelemetry settings as arguments or EDGETELEMETRY_* variables)")
        if ignored:
            log.info("%s: ignoring keys edgetelemetry does not use: %s", where,
                     ", ".join(sorted(ignored)))
        if "iot_endpoint" in mapped:
            try:
                origin, alias = iot_names.split_url(str(mapped["iot_endpoint"]))
            except ValueError as exc:
                raise ConfigError(f"sagemaker_edge_provider_aws_iot_cred_endpoint (from "
                                  f"{where}): {exc}") from None
            mapped["iot_endpoint"] = origin
            if alias is not None:
                mapped["iot_role_alias"] = alias
            elif "fleet_name" in mapped:
                mapped["iot_role_alias"] = f"SageMakerEdge-{mapped['fleet_name']}"
        if base is not None:
            mapped = _relative_to(mapped, base)
        return cls._merge([(mapped, where)], environ, overrides)

    @classmethod
    def _merge(cls, layers: list[tuple[dict[str, Any], str]], environ: Mapping[str, str],
               overrides: Mapping[str, Any]) -> AgentConfig:
        values: dict[str, Any] = {}
        for data, where in layers:
            for key, raw in data.items():
                values[key] = _check(key, raw, where)
        env_values = _from_environ(environ)
        for key, raw in env_values.items():
            values[key] = _check(key, raw, f"environment variable {_env_name(key)}", True)
        for key, raw in overrides.items():
            values[key] = _check(key, raw, "argument")
        missing = [k for k in REQUIRED if values.get(k) is None]
        if missing:
            hint = "; ".join(f"{k}: pass {k}=..., set {_env_name(k)} or put it in the "
                             "config file" for k in missing)
            raise ConfigError(f"missing required settings ({hint})")
        return cls(**{k: v for k, v in values.items() if v is not None})

    # -- for the agent ------------------------------------------------------------------------

    def credentials(self) -> Any:
        """What ``Sender(credentials=...)`` takes: ``None`` for the default chain, botocore
        ``Credentials`` for static keys, a resolver for a profile, ``IotCredentialProvider``."""
        from .credentials import configured_credentials

        return configured_credentials(self)

    def sender_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Sender`` (endpoint, region, timeouts, retries, credentials)."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "credentials": self.credentials(),
            "connect_timeout": self.connect_timeout_s,
            "read_timeout": self.read_timeout_s,
            "max_attempts": self.max_attempts,
            "backoff_base": self.backoff_base_s,
            "backoff_cap": self.backoff_cap_s,
            "verify": self.ca_bundle,
        }


# -- helpers ----------------------------------------------------------------------------------

def _check(key: str, raw: Any, where: str, from_text: bool = False) -> Any:
    spec = KEYS.get(key)
    if spec is None:
        raise ConfigError(_unknown_message(key, list(KEYS), where))
    if raw is None:
        return None
    try:
        return spec.rule(raw, from_text)
    except RuleError as bad:
        shown = "" if key in SECRET_KEYS else f", got {_short(raw)}"
        raise ConfigError(f"{key} (from {where}): {bad.rule}{shown}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unknown_message(key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else \
        "; see docs/configuration.md for the valid keys"
    return f"unknown key {key!r} in {where}{hint}"


def _refuse_unknown(keys: Any, where: str) -> None:
    for key in keys:
        if key not in KEYS:
            raise ConfigError(_unknown_message(str(key), list(KEYS), where))


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    valid = {_env_name(k): k for k in KEYS}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = valid.get(name)
        if key is None:
            close = difflib.get_close_matches(name, list(valid) + [CONFIG_ENV], n=1,
                                              cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else \
                "; see docs/configuration.md for the valid names"
            raise ConfigError(f"unknown environment variable {name}{hint}")
        if value == "":
            continue  # VAR= means "not set", as shells and systemd units write it
        out[key] = value
    return out


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        # the descriptor we check is the one we read, not whatever the path names a moment later
        raw, info = read_checked(path, 1 << 20)
    except OSError as exc:
        raise ConfigError(f"cannot open config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(
            exc, json.JSONDecodeError) else ""
        raise ConfigError(f"config file {path} is not valid JSON{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    _check_private(path, info, [k for k in data if k in SECRET_KEYS and data[k] is not None])
    return data


def _check_private(path: Path, info: os.stat_result, secrets: list[str]) -> None:
    """Refuse a file others can rewrite; refuse secrets in a file others can read."""
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o002:
        raise ConfigError(f"config file {path} is writable by others (mode {mode:04o}): "
                          f"anyone could redirect the agent; chmod o-w {path}")
    if not secrets:
        return
    if mode & 0o077:
        raise ConfigError(f"config file {path} holds {', '.join(sorted(secrets))} but is "
                          f"accessible by group or others (mode {mode:04o}); chmod 600 {path}")
    euid = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
    if info.st_uid not in (euid, 0):
        raise ConfigError(f"config file {path} holds {', '.join(sorted(secrets))} but is owned "
                          f"by uid {info.st_uid}, not by this user ({euid}) or root")


def _relative_to(data: Mapping[str, Any], config_path: Path) -> dict[str, Any]:
    base = config_path.resolve().parent
    out = dict(data)
    for key in _PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value and not value.startswith("~") \
                and not os.path.isabs(value):
            out[key] = str(base / value)
    return out


def _sagemaker_value(key: str, value: Any, where: str) -> Any:
    """The original agent wrote some values as strings ("true"); read them as their kind."""
    if key == "sagemaker_edge_log_verbose" and isinstance(value, str):
        try:
            return text_value(value, "bool")
        except RuleError as bad:
            raise ConfigError(f"{key} (from {where}): {bad.rule}, got {_short(value)}") from None
    return value
