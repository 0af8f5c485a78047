"""Fleets, devices and deployment plans, in any SQL backend (a mixin of ``SqlStore``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...heartbeat import HeartbeatValidationError, validate_shape
from ...heartbeat.service import shape
from ..errors import RegistrationError
from .base import DeviceRefused
from .db import Db
from .sqlbase import SqlStore

__all__ = ["Registration"]

logger = logging.getLogger(__name__)


def _check_name(shape_name: str, value: object, what: str) -> str:
    try:
        validate_shape(shape(shape_name), value, what)
    except HeartbeatValidationError as exc:
        raise RegistrationError(str(exc)) from None
    assert isinstance(value, str)
    return value


class Registration(SqlStore):
    # -- registration ------------------------------------------------------------------------

    def register_fleet(self, name: str, description: str | None = None) -> None:
        """Create a device fleet (idempotent; a given description replaces the stored one)."""
        _check_name("DeviceFleetName", name, "fleet")
        with self._write() as db:
            db.run(
                "INSERT INTO fleets(name, description, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET description = "
                "coalesce(excluded.description, fleets.description)",
                (name, description, self._clock()),
            )

    def register_devices(self, fleet: str, names: Iterable[str]) -> None:
        """Register devices in an existing fleet (all or none).

        Re-registering a device in its fleet is a no-op (or undoes a deregistration); a device
        registered in another fleet must be deregistered first (``RegistrationError``).
        """
        _check_name("DeviceFleetName", fleet, "fleet")
        devices = [_check_name("DeviceName", n, "device") for n in names]
        with self._write() as db:
            if db.one("SELECT 1 FROM fleets WHERE name = ?", (fleet,)) is None:
                raise RegistrationError(f"fleet {fleet!r} does not exist; register it first")
            for device in devices:
                self._register_device(db, device, fleet, auto=False)

    def register_device(self, name: str, fleet: str) -> None:
        self.register_devices(fleet, [name])

    def _register_device(self, db: Db, name: str, fleet: str, auto: bool) -> None:
        row = db.one("SELECT fleet, deregistered_at FROM devices WHERE name = ?", (name,))
        now = self._clock()
        if row is None:
            # a replica registering the same device at the same moment is not an error
            db.run(
                "INSERT INTO devices(name, fleet, registered_at, auto_registered) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
                (name, fleet, now, int(auto)),
            )
        elif row[1] is not None:  # deregistered: may come back, in any fleet
            db.run(
                "UPDATE devices SET fleet = ?, registered_at = ?, deregistered_at = NULL "
                "WHERE name = ?",
                (fleet, now, name),
            )
        elif row[0] != fleet:
            raise RegistrationError(
                f"device {name!r} is registered in fleet {row[0]!r}; deregister it before "
                f"registering it in {fleet!r}"
            )

    def deregister_devices(self, names: Iterable[str]) -> None:
        """Deregister devices: their history stays, their requests are refused from now on."""
        names = list(names)
        with self._write() as db:
            for name in names:
                changed = db.run(
                    "UPDATE devices SET deregistered_at = ? WHERE name = ? AND "
                    "deregistered_at IS NULL",
                    (self._clock(), name),
                )
                if not changed and db.one("SELECT 1 FROM devices WHERE name = ?", (name,)) is None:
                    raise RegistrationError(f"device {name!r} is not registered")

    def check_device(
        self,
        name: str,
        fleet: str,
        *,
        auto_register: bool = False,
        allow_deregistered: bool = True,
    ) -> str:
        """The registration status of ``name`` in ``fleet``: ``"REGISTERED"`` or ``"DEREGISTERED"``.

        Raises ``DeviceRefused`` when the device is unknown (unless ``auto_register``, which
        registers it and its fleet), registered in another fleet, or deregistered and
        ``allow_deregistered`` is false.
        """
        ctx = self._write() if auto_register else self._read()
        with ctx as db:
            return self._resolve(
                db, name, fleet, auto_register=auto_register, allow_deregistered=allow_deregistered
            )[0]

    def _resolve(
        self, db: Db, name: str, fleet: str, *, auto_register: bool, allow_deregistered: bool
    ) -> tuple[str, int]:
        """The device's status and id, or ``DeviceRefused``."""
        row = db.one("SELECT fleet, deregistered_at, id FROM devices WHERE name = ?", (name,))
        if row is None:
            if not auto_register:
                raise DeviceRefused(
                    "unregistered",
                    f"Device '{name}' is not registered in device fleet '{fleet}'. Register it "
                    "with the endpoint's registry before it calls the service.",
                )
            db.run(
                "INSERT INTO fleets(name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                (fleet, self._clock()),
            )
            self._register_device(db, name, fleet, auto=True)
            logger.info("auto-registered device %s in fleet %s", name, fleet)
            return self._resolve(
                db, name, fleet, auto_register=False, allow_deregistered=allow_deregistered
            )
        if row[0] != fleet:
            raise DeviceRefused(
                "fleet",
                f"Device '{name}' is not registered in device fleet '{fleet}' (it belongs to "
                "another fleet).",
            )
        if row[1] is not None:
            if not allow_deregistered:
                raise DeviceRefused(
                    "deregistered", f"Device '{name}' was deregistered from device fleet '{fleet}'."
                )
            return "DEREGISTERED", int(row[2])
        return "REGISTERED", int(row[2])

    # -- deployments -------------------------------------------------------------------------

    def put_deployment(
        self,
        deployment: Mapping[str, Any],
        *,
        fleets: Sequence[str] = (),
        devices: Sequence[str] = (),
    ) -> None:
        """Store (or replace) an ``EdgeDeployment`` and the fleets/devices it targets.

        ``deployment`` is the botocore ``EdgeDeployment`` shape (``DeploymentName``, ``Type``,
        ``FailureHandlingPolicy``, ``Definitions``), checked against the model; ``GetDeployments``
        serves it as given to every targeted device.  Replacing a deployment replaces its targets.
        """
        try:
            validate_shape(shape("EdgeDeployment"), dict(deployment), "deployment")
        except HeartbeatValidationError as exc:
            raise RegistrationError(str(exc)) from None
        name = deployment.get("DeploymentName")
        if not name:
            raise RegistrationError("deployment.DeploymentName is required")
        for f in fleets:
            _check_name("DeviceFleetName", f, "fleet")
        for d in devices:
            _check_name("DeviceName", d, "device")
        if not fleets and not devices:
            raise RegistrationError(f"deployment {name!r} targets no fleet and no device")
        now = self._clock()
        with self._write() as db:
            db.run(
                "INSERT INTO deployments(name, definition, created_at, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "definition = excluded.definition, updated_at = excluded.updated_at",
                (name, json.dumps(dict(deployment), sort_keys=True), now, now),
            )
            db.run("DELETE FROM deployment_targets WHERE deployment = ?", (name,))
            db.many(
                "INSERT INTO deployment_targets(kind, target, deployment) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [("fleet", f, name) for f in fleets] + [("device", d, name) for d in devices],
            )

    def remove_deployment(self, name: str) -> None:
        with self._write() as db:
            db.run("DELETE FROM deployments WHERE name = ?", (name,))

    def deployments_for(self, device: str, fleet: str) -> list[dict[str, Any]]:
        """The ``EdgeDeployment`` objects targeting the device or its fleet, by name."""
        with self._read() as db:
            rows = db.rows(
                "SELECT DISTINCT d.name, d.definition FROM deployments d "
                "JOIN deployment_targets t ON t.deployment = d.name "
                "WHERE (t.kind = 'device' AND t.target = ?) OR (t.kind = 'fleet' AND t.target = ?) "
                "ORDER BY d.name",
                (device, fleet),
            )
        return [json.loads(definition) for _, definition in rows]
