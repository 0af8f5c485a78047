"""Fixtures for every test module: real servers on loopback (see realservices.py), and the
hypothesis settings every property test runs with."""

from hypothesis import settings

pytest_plugins = ["realservices"]

# No per-example deadline: the tests run on shared 2-core machines where a neighbour's burst
# makes one example slow, and speed is measured in benchmarks/, never asserted in a unit test.
settings.register_profile("edgetelemetry", deadline=None)
settings.load_profile("edgetelemetry")
