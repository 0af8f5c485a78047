"""Series names are checked at handle creation against the heartbeat's rules, and those rules
are checked against the service model botocore ships, so a model update is caught here."""

import re

import botocore.session
import pytest

import edgetelemetry as et
from edgetelemetry.recording import naming


@pytest.fixture(scope="module")
def shapes():
    model = botocore.session.get_session().get_service_model("sagemaker-edge")
    return model


def _string_shape(model, structure: str, member: str):
    return model.shape_for(structure).members[member]


def _model_pattern(shape) -> str:
    pattern = shape.metadata["pattern"]
    return pattern.removeprefix("^").removesuffix("$")


@pytest.mark.parametrize(
    "rule, structure, member",
    [
        (naming.MODEL_RULE, "Model", "ModelName"),
        (naming.VERSION_RULE, "Model", "ModelVersion"),
        (naming.DIMENSION_RULE, "EdgeMetric", "Dimension"),
    ],
)
def test_rules_are_at_least_as_strict_as_the_model(shapes, rule, structure, member) -> None:
    shape = _string_shape(shapes, structure, member)
    assert rule.pattern == _model_pattern(shape)
    assert rule.min_len >= shape.metadata.get("min", 0)
    assert rule.max_len <= shape.metadata["max"]


def test_metric_names_fit_the_model(shapes) -> None:
    shape = _string_shape(shapes, "EdgeMetric", "MetricName")
    assert naming.METRIC_RULE.pattern == _model_pattern(shape)
    longest = naming.heartbeat_metric_name("m" * naming.METRIC_RULE.max_len, None, "rejected")
    assert len(longest) <= shape.metadata["max"]
    unit_rule = naming._metric_rule("ms")
    longest = naming.heartbeat_metric_name("m" * unit_rule.max_len, "ms", "rejected")
    assert len(longest) <= shape.metadata["max"]
    for stat in naming.STAT_SUFFIXES:
        name = naming.heartbeat_metric_name("x", None, stat)
        assert shape.metadata["min"] <= len(name)
        assert re.fullmatch(_model_pattern(shape), name)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"metric": "latency_ms"}, "latency_ms"),
        ({"metric": ""}, "1-"),
        ({"metric": "-lat"}, "does not match"),
        ({"model": "r18"}, "4-63"),
        ({"model": "resnet_18"}, "no underscore"),
        ({"model": "a" * 64}, "4-63"),
        ({"version": "1.0-rc1"}, "no hyphen"),
        ({"version": "v" * 31}, "1-30"),
        ({"dimension": "camera front"}, "slashes"),
        ({"unit": "m/s"}, "letters and digits"),
        ({"model": 7}, "must be a str"),
    ],
)
def test_invalid_names_say_which_rule_failed(kwargs, needle) -> None:
    args = {"model": "resnet18", "version": "1.0", "unit": "ms", "dimension": None}
    args.update(kwargs)
    metric = args.pop("metric", "latency")
    with et.Recorder(collector_period=None) as rec:
        with pytest.raises(ValueError) as info:
            rec.histogram(metric, **args)
    message = str(info.value)
    assert needle in message
    assert "for example" in message or "must be a str" in message


def test_valid_names_pass() -> None:
    with et.Recorder(collector_period=None) as rec:
        rec.histogram("latency", unit="ms", model="resnet-18", version="1.0 beta_2",
                      dimension="camera-front/left")
        rec.histogram("input-bytes", model="yolo", version="7")
