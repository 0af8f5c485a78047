"""The store backends every store test runs against: a SQLite file and a PostgreSQL database of
the real server the harness starts (tests/realservices.py).  Not a conftest.py: a test module
imports ``store_target_fixture`` (and ``make_store``) from here.

``store_target`` is what an operator passes as ``--store``: a file path, or a
``postgresql://`` URL of a fresh empty database dropped after the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetelemetry.server.store import FleetStore, open_store

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(name="store_target", params=BACKENDS)
def store_target_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite3")
    return str(request.getfixturevalue("postgresql_url"))


@pytest.fixture(name="store_factory")
def store_factory_fixture(store_target: str) -> Iterator[Callable[..., Any]]:
    """``store_factory(clock=..., migrate=...)``: a store on ``store_target``, closed after the
    test (several may be open at once, as several processes would)."""
    opened: list[Any] = []

    def make(clock: Callable[[], float] = time.time, **kwargs: Any) -> Any:
        store = open_store(store_target, clock=clock, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def registered(store: FleetStore, fleet: str, devices: list[str]) -> FleetStore:
    store.register_fleet(fleet)
    store.register_devices(fleet, devices)
    return store
