"""The registry document (``edgetelemetry register``, ``serve --registry``) applied to a store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import RegistrationError
from .base import FleetStore

__all__ = ["apply_registry"]


def apply_registry(store: FleetStore, document: Mapping[str, Any]) -> dict[str, int]:
    """Apply a JSON registry document; return counts of what it named.

    ::

        {"fleets": [{"name": "line-1", "description": "...", "devices": ["cam-1", "cam-2"]}],
         "deregister": ["cam-9"],
         "deployments": [{"deployment": {<EdgeDeployment>}, "fleets": ["line-1"],
                          "devices": []}]}

    Every key is optional.  Applying the same document twice changes nothing.
    """
    if not isinstance(document, Mapping):
        raise RegistrationError("registry document must be a JSON object")
    unknown = set(document) - {"fleets", "deregister", "deployments"}
    if unknown:
        raise RegistrationError(
            f"registry document has unknown keys {sorted(unknown)}; known: fleets, deregister, "
            "deployments"
        )
    counts = {"fleets": 0, "devices": 0, "deregistered": 0, "deployments": 0}
    for entry in _list(document, "fleets"):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise RegistrationError("each fleets[] entry needs a name")
        store.register_fleet(entry["name"], entry.get("description"))
        devices = _list(entry, "devices")
        store.register_devices(entry["name"], devices)
        counts["fleets"] += 1
        counts["devices"] += len(devices)
    deregister = _list(document, "deregister")
    if deregister:
        store.deregister_devices(deregister)
        counts["deregistered"] = len(deregister)
    for entry in _list(document, "deployments"):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("deployment"), Mapping):
            raise RegistrationError("each deployments[] entry needs a deployment object")
        store.put_deployment(
            entry["deployment"],
            fleets=_list(entry, "fleets"),
            devices=_list(entry, "devices"),
        )
        counts["deployments"] += 1
    return counts


def _list(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise RegistrationError(f"{key} must be a JSON array")
    return value
