"""Fixtures for every test module: real servers on loopback (see realservices.py)."""

pytest_plugins = ["realservices"]
