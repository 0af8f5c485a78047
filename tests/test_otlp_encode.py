"""Snapshots -> OTLP: the exponential-histogram mapping against an exact oracle, and the request
decoded with the official protobuf classes.

The oracle places each value on OTLP's scale with exact rational arithmetic (``x**(2**s)``
against ``2**(i+1)``), independently of the module's integer tables; quantiles are read from the
decoded OTLP buckets and compared with the exact quantile of the values recorded.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from fractions import Fraction

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

import edgetelemetry as et
from edgetelemetry.otlp import aligned_scale, auto_scale, exponential_mapping
from edgetelemetry.otlp.encode import OtlpIdentity, build_metrics_request, request_json
from edgetelemetry.snapshot import HistogramLayout

QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
STEP = 2.0 ** -12  # one mantissa step of the layout, relative to an octave's base


def layout_of(k: int) -> HistogramLayout:
    with et.Recorder(collector_period=None, buckets_per_octave=k) as rec:
        return rec.snapshot().layout


def v2(k: int) -> int:
    return (k & -k).bit_length() - 1


def otlp_index_exact(x: float, scale: int) -> int:
    """The OTLP bucket of x > 0: the i with 2**(i/w) < x <= 2**((i+1)/w), w = 2**scale."""
    w = 1 << scale
    frac = Fraction(x)
    e = math.frexp(x)[1] - 1  # x in [2**e, 2**(e+1))
    base = e * w
    power = (frac / Fraction(2) ** e) ** w  # in [1, 2**w)
    i = -1
    while not power <= 2 ** (i + 1):
        i += 1
    return base + i


# -- the mapping's structure -------------------------------------------------------------------

@pytest.mark.parametrize("k", [8, 16, 32, 64, 128])
def test_power_of_two_k_maps_one_to_one_at_its_scale(k: int) -> None:
    layout = layout_of(k)
    scale = auto_scale(layout)
    assert 1 << scale == k
    mapping = exponential_mapping(layout, scale)
    assert mapping.aligned
    assert mapping.sub_index == tuple(range(k))
    # at a bucket's log midpoint: an ideal bucket's error plus the edges' rounding, no more
    assert mapping.midpoint_error <= 2 ** (1 / (2 * k)) - 1 + STEP


def test_default_k36_is_not_aligned_at_scale_6_and_says_how_far() -> None:
    layout = layout_of(36)
    assert auto_scale(layout) == 6
    mapping = exponential_mapping(layout, 6)
    assert not mapping.aligned
    assert len(set(mapping.sub_index)) == 36  # no two of our buckets share an OTLP bucket
    assert 0.0151 < mapping.midpoint_error < 0.0152  # vs our own 0.97%
    assert 0.0206 < mapping.bound_error < 0.0207
    assert aligned_scale(layout) == 2  # 36 = 9 * 2**2: nine of ours per OTLP bucket
    coarse = exponential_mapping(layout, 2)
    assert coarse.aligned and coarse.sub_index == tuple(j // 9 for j in range(36))


def test_aligned_scale_is_the_two_adic_valuation_for_every_k() -> None:
    """Number theory and the integer check agree: OTLP's bounds at scale s are among our ideal
    bounds 2**(j/K) exactly when 2**s divides K, and the edges' rounding keeps them ours."""
    for k in range(8, 256):
        layout = layout_of(k)
        assert aligned_scale(layout) == min(v2(k), auto_scale(layout)), k


def test_scale_is_checked() -> None:
    layout = layout_of(36)
    for bad in (-1, 11, 2.0, True, None):
        with pytest.raises(ValueError, match="OTLP scale"):
            exponential_mapping(layout, bad)  # type: ignore[arg-type]


# -- every value against the exact oracle ------------------------------------------------------

def edge_values(layout: HistogramLayout, octaves: range) -> list[float]:
    """Values on, just below and just above every edge, and a mantissa step either side."""
    out = []
    for octave in octaves:
        for j in range(layout.buckets_per_octave):
            lo, _ = layout.bounds(octave * layout.buckets_per_octave + j)
            for x in (lo, math.nextafter(lo, 0), math.nextafter(lo, math.inf),
                      lo * (1 - STEP / 2), lo * (1 + STEP / 2)):
                out.append(x)
    return out


@pytest.mark.parametrize("k,scale", [(32, 5), (64, 6), (36, 2), (48, 4), (36, 6), (36, 7),
                                     (100, 7), (255, 8)])
def test_each_value_lands_where_the_docs_say(k: int, scale: int) -> None:
    layout = layout_of(k)
    mapping = exponential_mapping(layout, scale)
    rng = random.Random(k * 100 + scale)
    octaves = range(28, 33)  # around 1.0 (min_exponent -30)
    xs = edge_values(layout, octaves) + [
        math.ldexp(1.0 + rng.random(), rng.choice(list(octaves)) + layout.min_exponent)
        for _ in range(4000)]
    misplaced = 0
    for x in xs:
        ours = mapping.index(layout.index_of(x))  # type: ignore[arg-type]
        exact = otlp_index_exact(x, scale)
        lo, hi = mapping.bounds(ours)
        if mapping.aligned:
            if ours == exact:
                continue
            misplaced += 1
            power_of_two = math.frexp(x)[0] == 0.5
            if power_of_two:  # closed below (ours) vs closed above (OTLP): one bucket up
                assert ours == exact + 1 and x == lo, x
            else:  # the step that straddles a bound: one bucket down, within a step of it
                step = math.ldexp(STEP, math.frexp(x)[1] - 1)
                assert ours == exact - 1 and hi < x <= hi + step, x
        else:
            if scale <= auto_scale(layout):  # OTLP buckets no narrower than ours
                assert abs(ours - exact) <= 1, x
            # whatever point of the reported bucket a consumer takes is within bound_error
            assert max(abs(lo - x), abs(hi - x)) <= mapping.bound_error * x * (1 + 1e-12), x
    if mapping.aligned:  # the misplaced are the edge cases above, a small minority
        assert misplaced < len(xs) // 10


# -- quantiles read from the decoded OTLP request ----------------------------------------------

def otlp_quantile(point, q: float) -> float:  # type: ignore[no-untyped-def]
    """The value at rank floor(q*(count-1)) read from an OTLP point: the bucket's log midpoint,
    clamped to [min, max] (min and max themselves at the ends), as our own quantile() does."""
    rank = int(q * (point.count - 1))
    if rank == 0:
        return float(point.min)
    if rank == point.count - 1:
        return float(point.max)
    w = 1 << point.scale
    buckets = []
    for i, n in enumerate(point.negative.bucket_counts):
        buckets.append((-2.0 ** ((point.negative.offset + i + 0.5) / w), n))
    buckets.reverse()
    buckets.append((0.0, point.zero_count))
    for i, n in enumerate(point.positive.bucket_counts):
        buckets.append((2.0 ** ((point.positive.offset + i + 0.5) / w), n))
    seen = 0
    for value, n in buckets:
        seen += n
        if seen > rank:
            return min(max(value, point.min), point.max)
    return float(point.max)


def decode(request: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest:
    out = ExportMetricsServiceRequest()
    out.ParseFromString(request.SerializeToString())
    return out


def recorded_point(xs: list[float], metric: str = "latency", **recorder: int):  # type: ignore[no-untyped-def]
    """Record ``xs`` in one series; its snapshot and its OTLP point, sent and decoded."""
    with et.Recorder(collector_period=None, **recorder) as rec:
        h = rec.histogram(metric, unit="ms", model="resnet18", version="1.0")
        for x in xs:
            h.record(x)
        snap = rec.snapshot()
    point = decode(build_metrics_request([snap], OtlpIdentity("cam-01", "line-1"))) \
        .resource_metrics[0].scope_metrics[0].metrics[0].exponential_histogram.data_points[0]
    return snap, point


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([32, 36, 64, 100]), st.lists(
    st.floats(min_value=1e-6, max_value=1e9), min_size=2, max_size=600))
def test_quantiles_from_otlp_buckets_against_the_exact_oracle(k: int, xs: list[float]) -> None:
    snap, point = recorded_point(xs, buckets_per_octave=k)
    mapping = exponential_mapping(snap.layout, point.scale)
    ordered = sorted(xs)
    assert point.count == len(xs) and point.min == ordered[0] and point.max == ordered[-1]
    assert point.sum == snap.series[0].sum
    assert sum(point.positive.bucket_counts) + point.zero_count == len(xs)
    for q in QUANTILES:
        exact = ordered[int(q * (len(xs) - 1))]
        assert abs(otlp_quantile(point, q) - exact) <= mapping.midpoint_error * exact * 1.000001
        assert abs(snap.series[0].quantile(q) - exact) <= snap.layout.relative_error * exact \
            * 1.000001  # type: ignore[operator]


def test_signed_values_zero_bucket_and_the_sum_rule() -> None:
    xs = [-5.0, -0.25, 0.0, 0.0, 1e-12, 3.0, 7.5]
    _, point = recorded_point(xs, metric="offset")
    assert point.count == 7 and point.min == -5.0 and point.max == 7.5
    assert point.zero_count == 3  # 0, 0 and 1e-12 (below 2**-30)
    assert point.zero_threshold == 2.0 ** -30
    assert sum(point.negative.bucket_counts) == 2 and sum(point.positive.bucket_counts) == 2
    assert not point.HasField("sum")  # OTLP: no sum when negative values were recorded
    for q in QUANTILES:
        exact = sorted(xs)[int(q * 6)]
        got = otlp_quantile(point, q)
        in_zero_region = got == 0 and abs(exact) < point.zero_threshold
        assert abs(got - exact) <= 0.02 * abs(exact) or in_zero_region, (q, got)


# -- the request as a whole --------------------------------------------------------------------

def attrs(kvs) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


def test_request_carries_identity_series_drops_and_agent_figures() -> None:
    with et.Recorder(collector_period=None) as rec:
        lat = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        conf = rec.histogram("confidence", model="resnet18", version="1.0", dimension="cls-3")
        for v in (1.0, 2.0, 4.0):
            lat.record(v)
        conf.record(0.9)
        lat.record(float("nan"))
        snap = rec.snapshot()
    figures = {"spool-seq": 17.0, "spool-records": 3.0, "otlp-pending": 1.0}
    req = decode(build_metrics_request([snap], OtlpIdentity("cam-01", "line-1", "0.9.1"),
                                       agent_metrics=figures))
    rm = req.resource_metrics[0]
    assert attrs(rm.resource.attributes) == {
        "service.name": "edgetelemetry", "service.version": "0.9.1",
        "service.instance.id": "cam-01", "device.id": "cam-01", "edgetelemetry.fleet": "line-1"}
    sm = rm.scope_metrics[0]
    assert sm.scope.name == "edgetelemetry" and sm.scope.version == et.__version__
    metrics = {m.name: m for m in sm.metrics}
    lat_m = metrics["latency"]
    assert lat_m.unit == "ms" and lat_m.exponential_histogram.aggregation_temporality == 1
    p = lat_m.exponential_histogram.data_points[0]
    assert attrs(p.attributes) == {"model": "resnet18", "model.version": "1.0"}
    assert (p.count, p.sum, p.min, p.max) == (3, 7.0, 1.0, 4.0)
    assert (p.start_time_unix_nano, p.time_unix_nano) == (snap.start_wall_ns, snap.end_wall_ns)
    c = metrics["confidence"].exponential_histogram.data_points[0]
    assert attrs(c.attributes)["dimension"] == "cls-3" and metrics["confidence"].unit == ""
    rejected = metrics["edgetelemetry.rejected"].sum
    assert rejected.is_monotonic and rejected.aggregation_temporality == 1
    assert [(attrs(d.attributes)["reason"], attrs(d.attributes)["metric"], d.as_int)
            for d in rejected.data_points] == [("nan", "latency", 1)]
    gauge = {name: m.gauge.data_points[0] for name, m in metrics.items() if m.HasField("gauge")}
    assert gauge["edgetelemetry.agent.spool_seq"].as_double == 17.0
    assert gauge["edgetelemetry.agent.otlp_pending"].as_double == 1.0
    seq = gauge["edgetelemetry.agent.window_seq"]
    assert seq.as_int == snap.seq and attrs(seq.attributes) == {"recorder.id": snap.recorder_id}
    assert all(g.time_unix_nano == snap.end_wall_ns for g in gauge.values())


def test_json_form_is_otlp_json_and_parses_back() -> None:
    with et.Recorder(collector_period=None) as rec:
        rec.histogram("latency", unit="ms", model="resnet18", version="1.0").record(3.0)
        snap = rec.snapshot()
    req = build_metrics_request([snap], OtlpIdentity("cam-01", "line-1"))
    body = request_json(req)
    doc = json.loads(body)
    point = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["exponentialHistogram"]
    assert point["aggregationTemporality"] == 1  # enums as integers, as OTLP/JSON says
    assert point["dataPoints"][0]["count"] == "1"  # 64-bit integers as strings
    back = json_format.Parse(body, ExportMetricsServiceRequest())
    assert back == req


def test_protobuf_is_imported_only_when_used() -> None:
    code = ("import sys, edgetelemetry, edgetelemetry.otlp, edgetelemetry.otlp.encode, "
            "edgetelemetry.agent; "
            "print(any(m.startswith(('opentelemetry', 'google.protobuf')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
