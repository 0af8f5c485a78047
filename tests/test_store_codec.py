"""The store's pure parts: the points encoding (``codec.py``) round-trips any value and time,
and what a request stores (``request.py``), its resend key above all."""

from __future__ import annotations

import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from edgetelemetry.server.store.codec import decode_points, encode_points
from edgetelemetry.server.store.request import parse_heartbeat

BASE = 1_700_000_000.0

values = st.one_of(
    st.none(),
    st.floats(allow_nan=False),
    st.integers(min_value=-(2**60), max_value=2**60).map(float),
    st.sampled_from([0.0, -0.0, 1.5, 12.5, 2.0**53, -(2.0**53), 3.4e38, 1e-45, 5e-324]),
)
times = st.one_of(
    st.just(BASE),
    st.integers(min_value=0, max_value=10**9).map(lambda n: BASE + n),
    st.floats(min_value=BASE, max_value=4 * BASE),
    st.floats(min_value=0, max_value=1e12),
)
points = st.lists(st.tuples(st.integers(0, 2**40), values, times), max_size=40)


def same(a: float | None, b: float | None) -> bool:
    return a is b is None or (
        a is not None and b is not None and struct.pack("<d", a) == struct.pack("<d", b)
    )


@given(points)
def test_points_round_trip_bit_for_bit(pts: list[tuple[int, float | None, float]]) -> None:
    base = min((ts for _, _, ts in pts), default=BASE)
    decoded = list(decode_points(encode_points(pts, base), base))
    assert len(decoded) == len(pts)
    for (n1, v1, t1), (n2, v2, t2) in zip(pts, decoded):
        assert n1 == n2 and same(v1, v2) and t1 == t2


@given(points, st.sets(st.integers(0, 50)))
def test_decoding_a_subset_skips_the_others(
    pts: list[tuple[int, float | None, float]], wanted: set[int]
) -> None:
    base = min((ts for _, _, ts in pts), default=BASE)
    blob = encode_points(pts, base)
    assert [p[0] for p in decode_points(blob, base, wanted)] == [
        n for n, _, _ in pts if n in wanted
    ]


def test_a_typical_heartbeat_takes_about_ten_bytes_a_point() -> None:
    pts = [(n, 7.3 * (1 + n / 10), BASE) for n in range(1, 12)]
    assert len(encode_points(pts, BASE)) <= 11 * 10
    assert len(encode_points([(3, 600.0, BASE)], BASE)) == 3  # an integer: a varint
    assert len(encode_points([(3, 12.5, BASE + 60)], BASE)) == 1 + 4 + 1  # float32, offset


def request(*agent: tuple[str, float, str]) -> dict:
    return {
        "AgentVersion": "1.0",
        "DeviceName": "cam-1",
        "DeviceFleetName": "line-1",
        "AgentMetrics": [
            {"MetricName": name, "Value": value, "Dimension": dim, "Timestamp": BASE + 5}
            for name, value, dim in agent
        ],
        "Models": [{"ModelName": "m", "ModelMetrics": [
            {"MetricName": "latency-ms-p99", "Value": 3.0, "Timestamp": BASE, "Dimension": "all"},
            {"MetricName": "latency-ms-p50", "Value": 1.0}]}],
    }


def test_the_resend_key_is_the_one_spool_seq_metric() -> None:
    spool = "0123456789abcdef0123456789abcdef/2/3"
    hb = parse_heartbeat(request(("spool-seq", 41.0, spool), ("spool-bytes", 9.0, "all")), BASE)
    assert hb.spool_key == (spool, 41.0)
    assert parse_heartbeat(request(("spool-seq", 7.0, "all")), BASE).spool_key == ("all", 7.0)
    # none, or two (not what the contract says an agent sends): stored, never deduplicated
    assert parse_heartbeat(request(("spool-bytes", 9.0, "all")), BASE).spool_key is None
    two = request(("spool-seq", 1.0, "a/1/1"), ("spool-seq", 2.0, "b/1/1"))
    assert parse_heartbeat(two, BASE).spool_key is None


def test_times_and_series_keys() -> None:
    hb = parse_heartbeat(request(("spool-seq", 1.0, "all")), BASE + 30)
    # the earliest metric time; a metric without Timestamp takes the receive time
    assert hb.ts == BASE and hb.span == 30
    assert [key for key, _, _ in hb.points] == [
        (1, "", "", "spool-seq", "all"),
        (0, "m", "", "latency-ms-p99", "all"),
        (0, "m", "", "latency-ms-p50", ""),
    ]
    assert [m.name for m in hb.models] == ["m"] and hb.deployment_result is None
    assert math.isclose(hb.received_at, BASE + 30)
