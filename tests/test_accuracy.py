"""Quantiles against an exact oracle, and merge == record together (hypothesis)."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

import edgetelemetry as et

QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)

# Magnitudes inside the documented range 1e-9 .. 1e12, either sign, plus exact zeros.
magnitudes = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)
values = st.one_of(magnitudes, magnitudes.map(lambda v: -v), st.just(0.0))


def exact_quantile(ordered: list[float], q: float) -> float:
    return ordered[int(q * (len(ordered) - 1))]


def record_all(rec: et.Recorder, xs: list[float]) -> et.SeriesSnapshot:
    h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
    for x in xs:
        h.record(x)
    found = rec.snapshot().get("resnet18", "1.0", "latency")
    if found is None:  # an idle window lists no series: the series is empty
        assert not xs
        return et.SeriesSnapshot(model="resnet18", version="1.0", metric="latency",
                                 dimension=None, unit="ms", layout=rec.layout)
    return found


def assert_relatively_accurate(estimate: float, exact: float, bound: float) -> None:
    if exact == 0.0:
        assert estimate == 0.0
    else:
        assert abs(estimate - exact) <= bound * abs(exact) * (1 + 1e-12), (estimate, exact)


def test_default_bound_is_under_one_percent() -> None:
    with et.Recorder(collector_period=None) as rec:
        assert 0.009 < rec.relative_error < 0.01
        assert rec.info()["relative_error"] == rec.relative_error


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=1500))
def test_every_quantile_within_the_stated_error(xs: list[float]) -> None:
    with et.Recorder(collector_period=None, ring_capacity=2048) as rec:
        s = record_all(rec, xs)
        bound = rec.relative_error
    ordered = sorted(xs)
    assert s.count == len(xs)
    assert s.min == ordered[0] and s.max == ordered[-1]
    assert math.isclose(s.sum, math.fsum(xs), rel_tol=1e-9, abs_tol=1e-6 * max(map(abs, xs)))
    for q in QUANTILES:
        assert_relatively_accurate(s.quantile(q), exact_quantile(ordered, q), bound)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=8, max_value=255), st.lists(magnitudes, min_size=2, max_size=300))
def test_accuracy_is_a_constructor_parameter(k: int, xs: list[float]) -> None:
    with et.Recorder(collector_period=None, buckets_per_octave=k) as rec:
        s = record_all(rec, xs)
        bound = rec.relative_error
    assert bound < 2 ** (1 / k) - 1  # coarser layouts state a larger, still honest, bound
    ordered = sorted(xs)
    for q in QUANTILES:
        assert_relatively_accurate(s.quantile(q), exact_quantile(ordered, q), bound)


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=400), st.lists(values, max_size=400))
def test_merge_equals_recording_together(xs: list[float], ys: list[float]) -> None:
    with et.Recorder(collector_period=None) as ra, et.Recorder(collector_period=None) as rb, \
            et.Recorder(collector_period=None) as rab:
        a = record_all(ra, xs)
        b = record_all(rb, ys)
        ab = record_all(rab, xs + ys)
    m = a.merge(b)
    assert (m.count, m.min, m.max, m.zero, dict(m.pos), dict(m.neg)) == (
        ab.count, ab.min, ab.max, ab.zero, dict(ab.pos), dict(ab.neg))
    assert math.isclose(m.sum, ab.sum, rel_tol=1e-9, abs_tol=1e-3)
    for q in QUANTILES:
        assert m.quantile(q) == ab.quantile(q)


def test_python_layout_matches_the_core_bucketing() -> None:
    """The decoder's index_of agrees with the C drain for values across the whole range."""
    xs = [10 ** (e / 7) for e in range(-63, 84)] + [2.0 ** e for e in range(-30, 40)]
    with et.Recorder(collector_period=None, max_series=1) as rec:
        h = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        layout = rec.layout
        for x in xs:
            h.record(x)
            s = rec.snapshot().series[0]
            assert dict(s.pos) == {layout.index_of(x): 1}, x
