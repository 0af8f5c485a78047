"""``serve --workers N``: the endpoint in N worker processes under gunicorn's master.

Why gunicorn's master (docs/operations.md has the whole comparison): it is pure Python (one
wheel for x86_64, aarch64 and armv7l gateways, no compiler), and it brings what a production
server needs - it binds the socket once, forks the workers, restarts one that dies or falls
silent, and replaces them gracefully on SIGHUP.  The workers do not use gunicorn's HTTP
handling: each serves its share of the one listening socket with the embedded server
(``embedded.py``), so a worker holds a slow-client flood by itself (phase deadlines, connection
slots, eviction: ``--max-connections``, ``--header-timeout``, ...) and answers malformed
requests exactly as the default mode does, and a request costs what it costs there: gunicorn's
threaded worker, which hands every request from its event loop to a thread and back, took
0.81-1.08 ms of the workers' CPU a heartbeat against 0.59-0.79 ms (docs/operations.md,
Capacity).

The master reads the credentials file and checks (and with ``--migrate`` upgrades) the store
before any worker starts (one-line errors, exit 2), then closes it: nothing of the store crosses
the fork.  Each worker opens its own store after the fork - on PostgreSQL one connection pool
shared by the worker's connections, on SQLite its own writer connection, the workers taking
turns on the file's write lock - and runs its own compactor (passes of several processes take
disjoint batches, docs/store.md); the worker closes both when it exits.  SIGHUP re-reads
the credentials file in the master and replaces the workers gracefully (gunicorn's reload), so
keys rotate without a restart; a broken file is logged and the old keys stay.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .alerts import AlertConfig, AlertEvaluator
from .app import EndpointApp
from .embedded import EmbeddedServer, Limits
from .errors import CredentialsFileError
from .sigv4 import Credential, load_serving_credentials
from .store import Compactor, FleetStore

__all__ = ["WorkerSettings", "serve_with_workers"]

logger = logging.getLogger(__name__)


@dataclass
class WorkerSettings:
    host: str
    port: int
    workers: int
    credentials_file: str
    credentials: Mapping[str, Credential]
    open_store: Callable[[], FleetStore]
    start_compactor: Callable[[FleetStore], Compactor | None]
    app_options: Mapping[str, Any]
    limits: Limits = field(default_factory=Limits)  # each worker's connections
    # made in each worker (after the fork); https says whether it makes one
    ssl_context: Callable[[], ssl.SSLContext | None] = lambda: None
    https: bool = False
    log_level: str = "INFO"
    on_listening: Callable[[str], None] | None = None
    alerts: AlertConfig | None = None  # each worker evaluates; the store's lead sends


def gunicorn_available() -> bool:
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return False
    return True


_NOTIFY_EVERY = 0.5  # seconds between a worker's signs of life to the master (timeout: 30)


def _worker_class(settings: WorkerSettings) -> type:
    """A gunicorn worker that serves the listening socket it inherits with the embedded server
    (``embedded.py``) on its own threads, while its main thread tells the master it lives and
    watches for the end: SIGTERM (gunicorn sets ``alive`` false), a master gone (orphaned)."""
    from gunicorn.workers.base import Worker

    class EmbeddedWorker(Worker):  # type: ignore[misc]
        def run(self) -> None:
            server = EmbeddedServer(
                self.wsgi, settings.host, limits=settings.limits,
                ssl_context=settings.ssl_context(),
            )
            server.start(listening=self.sockets[0].sock)
            try:
                while self.alive and self.ppid == os.getppid():
                    self.notify()
                    time.sleep(_NOTIFY_EVERY)
            finally:  # in-flight requests are answered; idle connections close
                server.stop(self.cfg.graceful_timeout)

    return EmbeddedWorker


def serve_with_workers(settings: WorkerSettings) -> int:
    """Run gunicorn's master in this process until SIGINT/SIGTERM; its exit status."""
    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def __init__(self) -> None:
            self.credentials = dict(settings.credentials)
            self.store: FleetStore | None = None  # a worker's, once it has loaded the app
            self.compactor: Compactor | None = None
            self.alerts: AlertEvaluator | None = None
            super().__init__()

        def load_config(self) -> None:
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            config = {
                "bind": f"{host}:{settings.port}",
                "workers": settings.workers,
                "worker_class": _worker_class(settings),
                "timeout": 30,  # a worker silent for this long is restarted
                "graceful_timeout": 10,
                "preload_app": False,  # each worker opens its own store after the fork
                "accesslog": None,
                "errorlog": "-",
                "loglevel": settings.log_level.lower(),
                "proc_name": "edgetelemetry-endpoint",
                "when_ready": _when_ready,
                "worker_exit": _worker_exit,
            }
            # gunicorn >= 25 opens a control socket in $HOME: nothing here uses it
            config["control_socket_disable"] = True
            for key, value in config.items():
                if value is not None and key in self.cfg.settings:
                    self.cfg.set(key, value)

        def reload(self) -> None:
            """SIGHUP: new keys for the workers about to start; the old ones if unreadable."""
            try:
                fresh = load_serving_credentials(settings.credentials_file)
            except CredentialsFileError as exc:
                logger.error("SIGHUP: keeping the current keys: %s", exc)
            else:
                self.credentials = dict(fresh)
                logger.info("SIGHUP: %d access key(s) loaded; restarting workers", len(fresh))
            super().reload()

        def load(self) -> EndpointApp:
            """In the worker, after the fork: its store, its compactor, the app."""
            self.store = store = settings.open_store()
            try:
                if settings.alerts is not None:
                    self.alerts = AlertEvaluator.configured(store, settings.alerts)
                app = EndpointApp(
                    store, self.credentials, date_header=False, alerts=self.alerts,
                    **settings.app_options,
                )
                self.compactor = settings.start_compactor(store)
                if self.alerts is not None:
                    self.alerts.start()
            except BaseException:
                self.store = None
                store.close()
                raise
            return app

        def close_worker_store(self) -> None:
            if self.alerts is not None:
                self.alerts.stop()
                self.alerts = None
            if self.compactor is not None:
                self.compactor.stop()
                self.compactor = None
            if self.store is not None:
                self.store.close()
                self.store = None

    application: _Gunicorn | None = None

    def _worker_exit(server: Any, worker: Any) -> None:
        if application is not None:
            application.close_worker_store()

    def _when_ready(server: Any) -> None:
        if settings.on_listening is not None:
            name = server.LISTENERS[0].sock.getsockname()
            host = f"[{name[0]}]" if ":" in name[0] else name[0]
            scheme = "https" if settings.https else "http"
            settings.on_listening(f"{scheme}://{host}:{name[1]}")

    try:
        application = _Gunicorn()
        application.run()
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
    return 0
