"""AgentConfig: sources and precedence, validation messages, secrets, the original agent's file."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from edgetelemetry.agent import config as config_mod
from edgetelemetry.agent.config import (
    SAGEMAKER_EDGE_KEYS,
    AgentConfig,
    ConfigError,
    default_spool_dir,
)
from edgetelemetry.agent.credentials import IotCredentialProvider

BASE: dict[str, Any] = {"device_name": "cam-1", "fleet_name": "fleet-a", "endpoint_url": "http://127.0.0.1:8080"}
SECRET = "cfg-secret/ABCDEFG+123"
TOKEN = "cfg-session-token-456"
AKID = "AKIDCONFIGTEST99"


def write(path: Path, data: Any, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    os.chmod(path, mode)
    return path


# -- construction and defaults ---------------------------------------------------------------

def test_defaults() -> None:
    cfg = AgentConfig(**BASE)
    assert (cfg.region, cfg.interval_s, cfg.jitter, cfg.fsync, cfg.max_attempts) == (
        "us-east-1", 60.0, 0.1, "always", 3)
    assert cfg.credentials_source == "default" and cfg.credentials() is None
    assert cfg.spool_dir == default_spool_dir()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.interval_s = 5  # type: ignore[misc]


def test_default_spool_dir_depends_on_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edgetelemetry:/var/lib/other")
    assert default_spool_dir() == "/var/lib/edgetelemetry/spool"  # systemd's StateDirectory=
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_spool_dir() == "/var/lib/edgetelemetry/spool"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", "/state")
    assert default_spool_dir() == "/state/edgetelemetry/spool"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert default_spool_dir() == "/home/u/.local/state/edgetelemetry/spool"


# -- precedence ------------------------------------------------------------------------------

def test_precedence_arguments_over_environment_over_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {**BASE, "interval_s": 10, "jitter": 0.2,
                                       "region": "eu-west-1"})
    env = {"EDGETELEMETRY_INTERVAL_S": "20", "EDGETELEMETRY_JITTER": "0.3"}
    cfg = AgentConfig.load(path, env=env, interval_s=30)
    assert (cfg.interval_s, cfg.jitter, cfg.region) == (30.0, 0.3, "eu-west-1")


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {**BASE, "log_verbose": True})
    cfg = AgentConfig.load(env={"EDGETELEMETRY_CONFIG": str(path)})
    assert cfg.log_verbose is True


def test_environment_only_and_text_conversion() -> None:
    env = {f"EDGETELEMETRY_{k.upper()}": v for k, v in BASE.items()}
    env |= {"EDGETELEMETRY_SPOOL_MAX_BYTES": "1048576", "EDGETELEMETRY_LOG_VERBOSE": "yes",
            "EDGETELEMETRY_FSYNC": "batch", "EDGETELEMETRY_REGION": "",  # empty: unset
            "OTHER_VARIABLE": "ignored"}
    cfg = AgentConfig.load(env=env)
    assert (cfg.spool_max_bytes, cfg.log_verbose, cfg.fsync, cfg.region) == (
        1 << 20, True, "batch", "us-east-1")


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {**BASE, "spool_dir": "spool", "ca_bundle": "/abs/ca.pem"})
    cfg = AgentConfig.load(path, env={})
    assert cfg.spool_dir == str(tmp_path.resolve() / "spool")
    assert cfg.ca_bundle == "/abs/ca.pem"


def test_missing_required_settings_say_where_to_set_them() -> None:
    with pytest.raises(ConfigError, match="endpoint_url: pass endpoint_url=..., set "
                                          "EDGETELEMETRY_ENDPOINT_URL"):
        AgentConfig.load(env={}, device_name="cam-1", fleet_name="fleet-a")


# -- refusals and their messages ---------------------------------------------------------------

def test_unknown_file_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {**BASE, "intervall_s": 5})
    with pytest.raises(ConfigError, match=r"unknown key 'intervall_s' in config file .*c\.json; "
                                          r"did you mean 'interval_s'\?"):
        AgentConfig.load(path, env={})


def test_unknown_environment_variable_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="EDGETELEMETRY_INTERVAL; did you mean "
                                          "EDGETELEMETRY_INTERVAL_S"):
        AgentConfig.load(env={"EDGETELEMETRY_INTERVAL": "5"}, **BASE)


def test_unknown_argument_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'spool_max_bytes'"):
        AgentConfig.load(env={}, spool_max_byte=5, **BASE)


def test_unknown_key_without_a_close_match_points_to_the_docs() -> None:
    with pytest.raises(ConfigError, match="see docs/configuration.md"):
        AgentConfig.load(env={}, zzz=1, **BASE)


@pytest.mark.parametrize(("key", "value", "pattern"), [
    ("interval_s", 0, r"interval_s \(from argument\): must be a number at least 1 and at "
                      r"most 86400, got 0"),
    ("interval_s", "30", "must be a number"),  # JSON/Python strings are not numbers
    ("jitter", 1.5, "jitter .*at most 1"),
    ("spool_max_bytes", 1.5, "must be an integer"),
    ("max_attempts", True, "max_attempts .*integer"),
    ("backlog_rate", 0, "greater than 0"),
    ("interval_s", float("nan"), "interval_s"),
    ("fsync", "sometimes", "must be one of 'always', 'batch', 'never'"),
    ("region", "US_EAST", "AWS region"),
    ("endpoint_url", "edge.example.com", "http:// or https:// URL"),
    ("endpoint_url", "https://user:pw@edge.example.com", "must not contain a user"),
    ("log_verbose", "true", "true or false"),
    ("credentials_source", "vault", "one of 'auto'"),
])
def test_type_and_range_errors_name_key_and_rule(key: str, value: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        AgentConfig(**{**BASE, key: value})


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"interval_s \(from environment variable "
                                          r"EDGETELEMETRY_INTERVAL_S\): must be a number"):
        AgentConfig.load(env={"EDGETELEMETRY_INTERVAL_S": "soon"}, **BASE)


def test_backoff_cap_below_base_is_refused() -> None:
    with pytest.raises(ConfigError, match="backoff_cap_s .* must be at least backoff_base_s"):
        AgentConfig(**BASE, backoff_base_s=5, backoff_cap_s=1)


@pytest.mark.parametrize("name", ["", "-cam", "cam_", "cam.1", "cam 1", "a" * 64, "ca_-m"])
def test_bad_device_names(name: str) -> None:
    with pytest.raises(ConfigError, match=r"device_name .*1-63 characters"):
        AgentConfig(**{**BASE, "device_name": name})


@pytest.mark.parametrize("name", ["a", "cam-1", "cam--1", "cam_1", "cam-_1", "A" * 63])
def test_good_device_names(name: str) -> None:
    assert AgentConfig(**{**BASE, "fleet_name": name}).fleet_name == name


def _model_pattern(member: str) -> re.Pattern[str]:
    model = botocore.session.get_session().get_service_model("sagemaker-edge")
    shape = model.operation_model("SendHeartbeat").input_shape
    assert shape is not None
    return re.compile(shape.members[member].metadata["pattern"])


@given(st.text(alphabet="aZ09-_. /", max_size=70))
def test_name_rule_is_the_services(name: str) -> None:
    pattern = _model_pattern("DeviceName")
    expected = 1 <= len(name) <= 63 and pattern.fullmatch(name) is not None
    try:
        AgentConfig(**{**BASE, "device_name": name})
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == expected


def test_invalid_json_names_the_position(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", '{"device_name": "cam-1",\n  oops}')
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 2, column 3\)"):
        AgentConfig.load(path, env={})


def test_a_json_array_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JSON object"):
        AgentConfig.load(write(tmp_path / "c.json", [1]), env={})


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open config file .*nope.json"):
        AgentConfig.load(tmp_path / "nope.json", env={})


# -- secrets -----------------------------------------------------------------------------------

def static(**extra: Any) -> dict[str, Any]:
    return {**BASE, "aws_access_key_id": AKID, "aws_secret_access_key": SECRET,
            "aws_session_token": TOKEN, **extra}


def test_repr_masks_secrets() -> None:
    cfg = AgentConfig(**static())
    for text in (repr(cfg), str(cfg)):
        assert SECRET not in text and TOKEN not in text and AKID not in text
        assert "aws_secret_access_key='***'" in text


def test_secret_errors_do_not_show_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        AgentConfig(**static(aws_secret_access_key=f" {SECRET}"))
    assert "aws_secret_access_key" in str(info.value) and SECRET not in str(info.value)


def test_a_file_with_secrets_must_be_private(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", static(), mode=0o640)
    with pytest.raises(ConfigError, match=r"holds aws_access_key_id, aws_secret_access_key, "
                                          r"aws_session_token but is accessible by group or "
                                          r"others \(mode 0640\); chmod 600") as info:
        AgentConfig.load(path, env={})
    assert SECRET not in str(info.value)
    os.chmod(path, 0o600)
    cfg = AgentConfig.load(path, env={})
    assert cfg.credentials_source == "static"
    creds = cfg.credentials()
    assert isinstance(creds, Credentials) and creds.token == TOKEN


def test_a_file_without_secrets_may_be_readable_but_not_writable_by_others(
        tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", BASE, mode=0o644)
    assert AgentConfig.load(path, env={}).device_name == "cam-1"
    os.chmod(path, 0o646)
    with pytest.raises(ConfigError, match="writable by others"):
        AgentConfig.load(path, env={})


# -- credentials settings ------------------------------------------------------------------------

def test_credentials_source_is_inferred() -> None:
    assert AgentConfig(**BASE, profile="edge").credentials_source == "profile"
    iot = AgentConfig(**BASE, iot_endpoint="abc.credentials.iot.us-east-1.amazonaws.com",
                      iot_role_alias="SageMakerEdge-fleet-a", iot_cert_file="/c.pem",
                      iot_key_file="/k.pem")
    assert iot.credentials_source == "iot" and iot.iot_thing_name == "cam-1"


def test_mixed_credentials_are_refused() -> None:
    with pytest.raises(ConfigError, match="more than one source .*iot: iot_endpoint.*static"):
        AgentConfig(**static(iot_endpoint="h.example"))


def test_explicit_source_wins_over_inference() -> None:
    cfg = AgentConfig(**static(profile="edge", credentials_source="profile"))
    assert cfg.credentials_source == "profile"


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"credentials_source": "iot", "iot_endpoint": "h.example"},
     "needs iot_role_alias, iot_cert_file, iot_key_file"),
    ({"credentials_source": "static", "aws_access_key_id": AKID}, "needs both"),
    ({"credentials_source": "profile"}, "needs profile"),
    ({"iot_endpoint": "https://h.example/role-aliases/x/credentials", "iot_role_alias": "y",
      "iot_cert_file": "/c", "iot_key_file": "/k"}, "names role alias 'x'"),
])
def test_incomplete_credentials_are_refused(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        AgentConfig(**BASE, **kwargs)


def test_iot_credentials_and_sender_kwargs(tmp_path: Path) -> None:
    cfg = AgentConfig(**BASE, iot_endpoint="abc.credentials.iot.us-east-1.amazonaws.com",
                      iot_role_alias="SageMakerEdge-fleet-a", iot_cert_file="/c.pem",
                      iot_key_file="/k.pem", iot_ca_file="/ca.pem", iot_timeout_s=3,
                      ca_bundle="/endpoint-ca.pem", read_timeout_s=2)
    kwargs = cfg.sender_kwargs()
    provider = kwargs.pop("credentials")
    assert isinstance(provider, IotCredentialProvider)
    assert (provider.host, provider.thing_name, provider.ca_file, provider.timeout) == (
        "abc.credentials.iot.us-east-1.amazonaws.com", "cam-1", "/ca.pem", 3.0)
    assert kwargs == {"endpoint_url": BASE["endpoint_url"], "region": "us-east-1",
                      "connect_timeout": 5.0, "read_timeout": 2.0, "max_attempts": 3,
                      "backoff_base": 0.5, "backoff_cap": 60.0, "verify": "/endpoint-ca.pem"}


# -- the original agent's file -------------------------------------------------------------------

SAGEMAKER = {
    "sagemaker_edge_core_device_name": "cam-1",
    "sagemaker_edge_core_device_fleet_name": "fleet-a",
    "sagemaker_edge_core_region": "us-west-2",
    "sagemaker_edge_core_root_certs_path": "/agent/certificates",
    "sagemaker_edge_provider_provider": "Aws",
    "sagemaker_edge_provider_provider_path": "/agent/lib/libprovider_aws.so",
    "sagemaker_edge_provider_aws_ca_cert_file": "/agent/iot-credentials/AmazonRootCA1.pem",
    "sagemaker_edge_provider_aws_cert_file": "/agent/iot-credentials/device.pem.crt",
    "sagemaker_edge_provider_aws_cert_pk_file": "iot-credentials/private.pem.key",
    "sagemaker_edge_provider_aws_iot_cred_endpoint":
        "https://abc123.credentials.iot.us-west-2.amazonaws.com",
    "sagemaker_edge_provider_s3_bucket_name": "my-private-capture-bucket",
    "sagemaker_edge_core_capture_data_destination": "Cloud",
    "sagemaker_edge_core_capture_data_buffer_size": 30,
    "sagemaker_edge_core_folder_prefix": "capture",
    "sagemaker_edge_log_verbose": "true",
}


def test_import_maps_the_original_keys(tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "agent.json", SAGEMAKER, mode=0o644)
    with caplog.at_level(logging.INFO, logger="edgetelemetry.agent.config"):
        cfg = AgentConfig.from_sagemaker_edge_config(path, env={},
                                                     endpoint_url="https://edge.example.com")
    assert (cfg.device_name, cfg.fleet_name, cfg.region, cfg.log_verbose) == (
        "cam-1", "fleet-a", "us-west-2", True)
    assert cfg.credentials_source == "iot"
    assert cfg.iot_endpoint == "https://abc123.credentials.iot.us-west-2.amazonaws.com"
    assert cfg.iot_role_alias == "SageMakerEdge-fleet-a"  # the alias Edge Manager created
    assert cfg.iot_thing_name == "cam-1"
    assert cfg.iot_ca_file == "/agent/iot-credentials/AmazonRootCA1.pem"
    assert cfg.iot_key_file == str(tmp_path.resolve() / "iot-credentials/private.pem.key")
    (record,) = [r for r in caplog.records if "ignoring" in r.getMessage()]
    message = record.getMessage()
    for key in ("sagemaker_edge_core_root_certs_path", "sagemaker_edge_provider_s3_bucket_name",
                "sagemaker_edge_core_capture_data_destination",
                "sagemaker_edge_provider_provider_path"):
        assert key in message
    assert "my-private-capture-bucket" not in message  # key names only


def test_import_reads_the_role_alias_from_a_full_url() -> None:
    data = {**SAGEMAKER, "sagemaker_edge_provider_aws_iot_cred_endpoint":
            "https://abc.credentials.iot.us-west-2.amazonaws.com/role-aliases/custom-alias/"
            "credentials"}
    cfg = AgentConfig.from_sagemaker_edge_config(data, env={}, endpoint_url="http://h:1")
    assert (cfg.iot_endpoint, cfg.iot_role_alias) == (
        "https://abc.credentials.iot.us-west-2.amazonaws.com", "custom-alias")


def test_import_precedence_and_endpoint_from_the_environment() -> None:
    env = {"EDGETELEMETRY_ENDPOINT_URL": "https://edge.example.com",
           "EDGETELEMETRY_REGION": "eu-west-1"}
    cfg = AgentConfig.from_sagemaker_edge_config(SAGEMAKER, env=env, region="ap-south-1",
                                                 iot_thing_name="thing-7")
    assert (cfg.endpoint_url, cfg.region, cfg.iot_thing_name) == (
        "https://edge.example.com", "ap-south-1", "thing-7")


def test_import_without_an_endpoint_explains_why() -> None:
    with pytest.raises(ConfigError, match="EDGETELEMETRY_ENDPOINT_URL"):
        AgentConfig.from_sagemaker_edge_config(SAGEMAKER, env={})


def test_import_refuses_unknown_non_sagemaker_keys() -> None:
    data = {**SAGEMAKER, "sagemaker_edge_core_device_nam": "x", "device_nme": "y"}
    with pytest.raises(ConfigError, match=r"unknown key 'device_nme' in sagemaker_edge config.*"
                                          r"only sagemaker_edge_\* keys"):
        AgentConfig.from_sagemaker_edge_config(data, env={}, endpoint_url="http://h:1")


def test_import_checks_values() -> None:
    with pytest.raises(ConfigError, match="sagemaker_edge_provider_provider .*Aws, None, Custom"):
        AgentConfig.from_sagemaker_edge_config(
            {**SAGEMAKER, "sagemaker_edge_provider_provider": "aws"}, env={},
            endpoint_url="http://h:1")
    with pytest.raises(ConfigError, match=r"device_name \(from sagemaker_edge config\)"):
        AgentConfig.from_sagemaker_edge_config(
            {**SAGEMAKER, "sagemaker_edge_core_device_name": "cam.1"}, env={},
            endpoint_url="http://h:1")


def test_every_mapped_key_names_a_real_setting() -> None:
    assert set(SAGEMAKER_EDGE_KEYS.values()) <= set(config_mod.KEYS)
    assert {f.name for f in dataclasses.fields(AgentConfig)} == set(config_mod.KEYS)
