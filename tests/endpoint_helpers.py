"""A real endpoint for agent-side tests: an ``EndpointServer`` on loopback with one access key
and the named devices registered, stopped at the end of the block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgetelemetry.server import EndpointServer


@contextmanager
def running_endpoint(store: Path | None, key_id: str, secret: str, fleet: str,
                     devices: list[str]) -> Iterator[EndpointServer]:
    srv = EndpointServer(None if store is None else str(store), credentials={key_id: secret})
    srv.store.register_fleet(fleet)
    srv.store.register_devices(fleet, devices)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
