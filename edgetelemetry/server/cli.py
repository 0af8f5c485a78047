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
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import EdgeTelemetryError
from . import workers
from .alerts import AlertConfig, load_alert_config
from .app import DEFAULT_CACHE_TTL, DEFAULT_MAX_BODY
from .embedded import Limits
from .endpoint import EndpointServer
from .errors import CredentialsFileError, RegistrationError
from .fleet import DEFAULT_OFFLINE_AFTER, fleet_status, render_text
from .metrics import DEFAULT_MAX_SERIES, read_token_file
from .sigv4 import Credential, load_credentials_file, load_serving_credentials
from .store import (
    DEFAULT_STORE,
    FleetStore,
    StoreError,
    apply_registry,
    is_postgresql,
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
        "GetDeviceRegistration, GetDeployments) backed by SQLite or PostgreSQL: one process by "
        "default, or N gunicorn worker processes with --workers.",
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
        "mode 0600; SIGHUP reads it again",
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
    p.add_argument(
        "--rate-limit", type=float,
        help="requests per second per access key (per process: see docs/operations.md)",
    )
    p.add_argument("--burst", type=int, default=20, help="burst allowed by --rate-limit")
    p.add_argument("--certfile", help="PEM certificate chain: serve HTTPS (with --keyfile)")
    p.add_argument("--keyfile", help="PEM private key of --certfile")
    p.add_argument(
        "--workers", type=int, metavar="N",
        help="serve from N gunicorn worker processes (pip install 'edgetelemetry[server]'); "
        "without it, one process with no dependency",
    )
    p.add_argument(
        "--store-connections", "--threads", type=int, default=8, dest="store_connections",
        metavar="N", help="PostgreSQL connections each worker's requests share (--workers; 8)",
    )
    p.add_argument(
        "--behind-proxy", action="store_true",
        help="a reverse proxy on this machine fronts the endpoint (contrib/nginx): trust its "
        "X-Forwarded-For",
    )
    p.add_argument(
        "--header-timeout", type=float, default=10.0, metavar="SECONDS",
        help="the request line and headers must arrive within this total time (10)",
    )
    p.add_argument(
        "--body-timeout", type=float, default=20.0, metavar="SECONDS",
        help="the body must arrive within this total time (20)",
    )
    p.add_argument(
        "--max-connections", type=int, default=128,
        help="open connections at most (per worker with --workers; 128)",
    )
    p.add_argument(
        "--max-connections-per-address", type=int, default=32,
        help="open connections from one client address at most (per worker; 32)",
    )
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
    p.add_argument(
        "--metrics-token-file",
        metavar="FILE",
        help="/metrics: a private file holding a bearer token every scrape must send (without "
        "it, /metrics follows the /fleet page's access rule)",
    )
    p.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    p.add_argument(
        "--metrics-max-series",
        type=int,
        default=DEFAULT_MAX_SERIES,
        help=f"/metrics: the most series one scrape exposes ({DEFAULT_MAX_SERIES})",
    )
    p.add_argument(
        "--alerts",
        metavar="FILE",
        help="alert rules and webhook (JSON, mode 0600; docs/alerts.md): evaluated by this "
        "server, shown on /fleet, sent to the webhook",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


class _UsageError(Exception):
    """A bad option value: one line on stderr, exit 2."""


def _check_options(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port {args.port} is not a port (0-65535)")
    if (args.certfile is None) != (args.keyfile is None):
        raise _UsageError("--certfile and --keyfile go together")
    for name in ("certfile", "keyfile"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            raise _UsageError(f"--{name} {path}: no such file")
    if args.workers is not None:
        if not 1 <= args.workers <= 64:
            raise _UsageError(f"--workers {args.workers}: choose 1-64")
        if not 1 <= args.store_connections <= 256:
            raise _UsageError(f"--store-connections {args.store_connections}: choose 1-256")
        if args.store == ":memory:":
            raise _UsageError("--workers with --store :memory: would give each worker a store "
                              "of its own; name a file or a postgresql:// URL")
    for name in ("header_timeout", "body_timeout"):
        value = getattr(args, name)
        if not (0 < value <= 3600 and math.isfinite(value)):
            raise _UsageError(f"--{name.replace('_', '-')} must be in (0, 3600] seconds")
    if args.max_connections < 1 or args.max_connections_per_address < 1:
        raise _UsageError("--max-connections and --max-connections-per-address must be >= 1")


def _open_store(spec: str, *, migrate: bool = False, pool_size: int | None = None) -> FleetStore:
    """The store ``--store`` names (a SQLite file, ``:memory:``, or a ``postgresql://`` URL),
    with one-line errors for a file that cannot be: ``StoreError``.  ``pool_size``: the
    PostgreSQL connections this process may hold (a worker's threads and its compactor)."""
    if is_postgresql(spec):
        from .store.postgresql import DEFAULT_POOL_SIZE, PostgresStore

        return PostgresStore(spec, migrate=migrate, pool_size=pool_size or DEFAULT_POOL_SIZE)
    path = None if spec == ":memory:" else spec
    if path is not None:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StoreError(f"cannot open store {path}: no directory {folder}")
        if os.path.exists(path) and not os.path.isfile(path):
            raise StoreError(f"cannot open store {path}: not a regular file")
    return open_store(path, migrate=migrate)


def _ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise _UsageError(f"cannot use --certfile {certfile}, --keyfile {keyfile}: {exc}") from None
    return context


def _check_address_free(host: str, port: int) -> None:
    """``Address already in use`` as one line naming the address, before gunicorn tries."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, _listen_error(host, port, exc)) from None


def _listen_error(host: str, port: int, exc: OSError) -> str:
    shown = f"[{host}]" if ":" in host else host
    reason = (exc.strerror or str(exc)).lower()
    return f"cannot listen on {shown}:{port}: {reason}"


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(str(text).split())


def _app_options(args: argparse.Namespace, viewers: dict[str, str] | None) -> dict[str, Any]:
    return {
        "region": args.region,
        "auto_register": args.auto_register,
        "cache_ttl": args.cache_ttl,
        "max_body": args.max_body_bytes,
        "rate_limit": args.rate_limit,
        "burst": args.burst,
        "fleet_page": not args.no_fleet_page,
        "fleet_viewers": viewers,
        "offline_after": args.offline_after,
        "trust_forwarded": args.behind_proxy,
        "metrics": not args.no_metrics,
        "metrics_token": args.metrics_token,
        "metrics_max_series": args.metrics_max_series,
    }


def _load_registry(store: FleetStore, path: str) -> None:
    try:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RegistrationError(f"registry {path}: {exc}") from None
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
        _check_options(args)
        credentials = load_credentials_file(args.credentials_file)
        viewers = None
        if args.fleet_viewers:  # same format and permission rules as the credentials file
            logins = load_credentials_file(args.fleet_viewers)
            viewers = {user: login.secret_access_key for user, login in logins.items()}
        if not credentials:
            raise CredentialsFileError(f"credentials file {args.credentials_file} holds no key")
        context = _ssl_context(args.certfile, args.keyfile) if args.certfile else None
        args.metrics_token = (
            read_token_file(args.metrics_token_file) if args.metrics_token_file else None
        )
        alerts = load_alert_config(args.alerts) if args.alerts else None
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        store = _open_store(args.store, migrate=args.migrate)
    except (_UsageError, CredentialsFileError, StoreError, OSError, ValueError) as exc:
        print(f"edgetelemetry serve: {exc}", file=sys.stderr)
        return 2
    if args.workers is not None:
        return _serve_workers(args, credentials, viewers, store, alerts)
    try:
        if args.registry:
            _load_registry(store, args.registry)
        server = EndpointServer(
            None,
            host=args.host,
            port=args.port,
            credentials=credentials,
            store=store,
            ssl_context=context,
            max_connections=args.max_connections,
            max_per_address=args.max_connections_per_address,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            alerts=alerts,
            **_app_options(args, viewers),
        )
        try:
            url = server.start()
        except OSError as exc:
            raise OSError(exc.errno, _listen_error(args.host, args.port, exc)) from None
        compactor = start_compactor(store, args)
    except (OSError, ValueError, EdgeTelemetryError) as exc:
        store.close()
        print(f"edgetelemetry serve: {_one_line(exc)}", file=sys.stderr)
        return 2

    done = threading.Event()
    reload = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        signal.signal(signal.SIGHUP, lambda *_: reload.set())
    print(f"edgetelemetry endpoint listening on {url}", flush=True)
    try:
        while not done.wait(0.2):
            if reload.is_set():
                reload.clear()
                _reload_credentials(server, args.credentials_file)
    finally:
        if compactor is not None:
            compactor.stop()
        server.stop()
        store.close()
    return 0


def _reload_credentials(server: EndpointServer, path: str) -> None:
    """SIGHUP: the credentials file again; a broken one is logged and the current keys stay."""
    try:
        fresh = load_serving_credentials(path)
    except CredentialsFileError as exc:
        logger.error("SIGHUP: keeping the current keys: %s", exc)
        return
    server.reload_credentials(fresh)
    logger.info("SIGHUP: %d access key(s) loaded from %s", len(fresh), path)


def _serve_workers(
    args: argparse.Namespace,
    credentials: dict[str, Credential],
    viewers: dict[str, str] | None,
    store: FleetStore,
    alerts: AlertConfig | None = None,
) -> int:
    """The master checks everything a worker would trip on, then hands over to gunicorn."""
    try:
        if not workers.gunicorn_available():
            raise _UsageError("--workers needs gunicorn: pip install 'edgetelemetry[server]'")
        if args.registry:
            _load_registry(store, args.registry)
        _check_address_free(args.host, args.port)
    except (_UsageError, OSError, ValueError, EdgeTelemetryError) as exc:
        store.close()
        print(f"edgetelemetry serve: {_one_line(exc)}", file=sys.stderr)
        return 2
    store.close()  # each worker opens its own after the fork
    settings = workers.WorkerSettings(
        host=args.host,
        port=args.port,
        workers=args.workers,
        credentials_file=args.credentials_file,
        credentials=credentials,
        # one pool per worker, shared by its connections' threads, with a connection to spare
        # for the worker's compactor
        open_store=lambda: _open_store(args.store, pool_size=args.store_connections + 1),
        start_compactor=lambda store: start_compactor(store, args),
        app_options=_app_options(args, viewers),
        alerts=alerts,
        limits=Limits(
            max_connections=args.max_connections,
            max_per_address=args.max_connections_per_address,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
        ),
        ssl_context=lambda: _ssl_context(args.certfile, args.keyfile) if args.certfile else None,
        https=args.certfile is not None,
        log_level=args.log_level,
        on_listening=lambda url: print(
            f"edgetelemetry endpoint listening on {url} ({args.workers} workers)", flush=True
        ),
    )
    return workers.serve_with_workers(settings)


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
