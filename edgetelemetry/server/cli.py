"""Command-line entry points of the endpoint: ``edgetelemetry serve``, ``edgetelemetry register``
and ``edgetelemetry fleet status``; every parser of the server lives here.

Each is a plain function taking ``argv`` (without the subcommand) and returning an exit status, so
the package's CLI dispatcher can call them and tests can run them in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import EdgeTelemetryError
from .app import DEFAULT_CACHE_TTL, DEFAULT_MAX_BODY, EndpointServer
from .errors import CredentialsFileError, RegistrationError
from .fleet import DEFAULT_OFFLINE_AFTER, fleet_status, render_text
from .sigv4 import load_credentials_file
from .store import (
    DEFAULT_STORE,
    FleetStore,
    StoreError,
    apply_registry,
    open_read_only,
    open_store,
)
from .store_cli import STORE_HELP, add_compaction_arguments, retention_of, start_compactor

__all__ = ["fleet_status_main", "main", "register_main", "status_parser"]

logger = logging.getLogger(__name__)


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgetelemetry serve",
        description="Run a SageMaker Edge Manager compatible endpoint (SendHeartbeat, "
        "GetDeviceRegistration, GetDeployments) backed by SQLite or PostgreSQL.",
    )
    p.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP + " (':memory:' for none)")
    p.add_argument(
        "--migrate",
        action="store_true",
        help="upgrade a store written by an older edgetelemetry before serving (otherwise "
        "serve refuses it and says so)",
    )
    add_compaction_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    p.add_argument(
        "--credentials-file",
        required=True,
        help="JSON {access_key_id: secret | {secret_access_key, session_token?, fleets?}}, "
        "mode 0600",
    )
    p.add_argument("--region", default="us-east-1", help="region devices sign for")
    p.add_argument("--registry", help="registry JSON (fleets, devices, deployments) to apply first")
    p.add_argument(
        "--auto-register",
        action="store_true",
        help="register unknown devices on first contact (demos and development only)",
    )
    p.add_argument("--cache-ttl", type=int, default=DEFAULT_CACHE_TTL, help="CacheTTL answered")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY)
    p.add_argument("--rate-limit", type=float, help="requests per second per access key")
    p.add_argument("--burst", type=int, default=20, help="burst allowed by --rate-limit")
    p.add_argument(
        "--fleet-viewers",
        metavar="FILE",
        help="JSON {user: password}, mode 0600: HTTP Basic logins for the /fleet page from any "
        "address (without it, /fleet answers loopback clients only)",
    )
    p.add_argument("--no-fleet-page", action="store_true", help="do not serve /fleet")
    p.add_argument(
        "--offline-after",
        type=float,
        default=DEFAULT_OFFLINE_AFTER,
        metavar="SECONDS",
        help="/fleet: a heartbeat is recent (device connected) within this many seconds (180)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _load_registry(store: FleetStore, path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        document = json.load(fh)
    counts = apply_registry(store, document)
    logger.info("registry %s applied: %s", path, counts)


def main(argv: Sequence[str] | None = None) -> int:
    """``edgetelemetry serve``: serve until SIGINT/SIGTERM; print the URL once listening."""
    parser = _serve_parser()
    args = parser.parse_args(argv)
    try:
        retention_of(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        credentials = load_credentials_file(args.credentials_file)
        viewers = None
        if args.fleet_viewers:  # same format and permission rules as the credentials file
            logins = load_credentials_file(args.fleet_viewers)
            viewers = {user: login.secret_access_key for user, login in logins.items()}
        if not credentials:
            raise CredentialsFileError(f"credentials file {args.credentials_file} holds no key")
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        store_path = None if args.store == ":memory:" else args.store
        store = open_store(store_path, migrate=args.migrate)
    except (CredentialsFileError, StoreError) as exc:
        print(f"edgetelemetry serve: {exc}", file=sys.stderr)
        return 2
    try:
        if args.registry:
            _load_registry(store, args.registry)
        server = EndpointServer(
            store_path,
            host=args.host,
            port=args.port,
            credentials=credentials,
            region=args.region,
            auto_register=args.auto_register,
            cache_ttl=args.cache_ttl,
            max_body=args.max_body_bytes,
            rate_limit=args.rate_limit,
            burst=args.burst,
            store=store,
            fleet_page=not args.no_fleet_page,
            fleet_viewers=viewers,
            offline_after=args.offline_after,
        )
        url = server.start()
        compactor = start_compactor(store, args)
    except (OSError, ValueError, EdgeTelemetryError) as exc:
        store.close()
        print(f"edgetelemetry serve: {exc}", file=sys.stderr)
        return 2

    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
    print(f"edgetelemetry endpoint listening on {url}", flush=True)
    try:
        done.wait()
    finally:
        if compactor is not None:
            compactor.stop()
        server.stop()
        store.close()
    return 0


def register_main(argv: Sequence[str] | None = None) -> int:
    """``edgetelemetry register --store PATH FILE``: apply a registry JSON document."""
    p = argparse.ArgumentParser(
        prog="edgetelemetry register",
        description="Register fleets, devices and deployments with a self-hosted endpoint's store.",
    )
    p.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
    p.add_argument("registry", help="registry JSON file ('-' for stdin)")
    args = p.parse_args(argv)
    try:
        document = json.load(sys.stdin) if args.registry == "-" else _read_json(args.registry)
        with open_store(args.store) as store:
            counts = apply_registry(store, document)
    except (OSError, ValueError, RegistrationError, StoreError) as exc:
        print(f"edgetelemetry register: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def status_parser(prog: str = "edgetelemetry fleet status") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Show the devices of a self-hosted endpoint's store: connected or offline, "
        "each model active/sampling, and its latest latency percentiles. Reads the store "
        "read-only, so it runs beside 'edgetelemetry serve'.",
    )
    p.add_argument(
        "--store", default=DEFAULT_STORE, help=STORE_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    p.add_argument(
        "--offline-after",
        type=_positive,
        default=DEFAULT_OFFLINE_AFTER,
        metavar="SECONDS",
        help="a heartbeat (LatestInference, LatestSampleTime) is recent within this many seconds "
        f"(default {DEFAULT_OFFLINE_AFTER:g}: 3 x the 60 s heartbeat interval)",
    )
    p.add_argument("--fleet", help="only this device fleet")
    p.add_argument("--device", help="only this device")
    return p


def fleet_status_main(argv: Sequence[str] | None = None) -> int:
    """``edgetelemetry fleet status``: print the status (table or ``--json``); 2 on a bad store."""
    args = status_parser().parse_args(argv)
    try:
        with open_read_only(args.store) as store:
            status = fleet_status(
                store, offline_after=args.offline_after, fleet=args.fleet, device=args.device
            )
    except StoreError as exc:
        print(f"edgetelemetry fleet status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        sys.stdout.write(render_text(status))
    return 0
