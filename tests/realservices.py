"""Real servers for the tests: PostgreSQL, Prometheus, nginx and mosquitto.

Each server runs on 127.0.0.1, on a free port, in a temporary directory of its own, as the
unprivileged user ``nobody`` when the tests run as root (PostgreSQL refuses root), and is stopped
with its files removed when its fixture ends, whether the tests passed or not. The servers are
also started with a parent-death signal, so a test run that is killed does not leave them behind.

Registered as a pytest plugin by tests/conftest.py; the fixtures:

- ``postgresql_server`` (session): a :class:`PostgreSQL`; ``.url(dbname)``,
  ``.create_database()``, ``.drop_database(name)``.
- ``postgresql_url`` (function): the URL of a fresh empty database, dropped after the test.
- ``prometheus_server`` (function): a factory, ``prometheus_server(["127.0.0.1:8000"])`` returns
  a started :class:`Prometheus` (``.url``, ``.query(promql)``, ``.wait_for(promql)``).
- ``nginx_proxy`` (function): a factory, ``nginx_proxy(["127.0.0.1:8001", "127.0.0.1:8002"],
  tls=True)`` returns a started :class:`NginxProxy` (``.url``, ``.ca_file``, ``.ssl_context()``).
- ``mosquitto_broker`` (session): a :class:`Mosquitto` (``.host``, ``.port``, ``.url``).

Every server also has ``.port``, ``.pids()``, ``.restart()`` (same port and data) and ``.stop()``;
the classes work alone as context managers, for a test that needs a server of its own to stop.

A missing server binary fails the test with what to install, never skips it: CI installs the
servers (scripts/setup.sh), so a skip would hide a missing feature.

Outside pytest, one server until Ctrl-C:
``python -m tests.realservices postgresql|mosquitto|prometheus TARGET...|nginx UPSTREAM...``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import ipaddress
import itertools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

HOST = "127.0.0.1"
# the user the servers run as when the tests run as root; it exists on every Debian system
SERVICE_USER = "nobody"
# where Debian puts daemons, off a normal user's PATH
SYSTEM_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin", "/sbin")
POSTGRESQL_DIRS = "/usr/lib/postgresql/*/bin"
SETUP_HINT = (
    "`apt-get install --no-install-recommends {package}`, or `bash scripts/setup.sh` as root"
)


_S = TypeVar("_S", bound="Service")


class ServiceUnavailable(RuntimeError):
    """A server's program is not installed."""


class ServiceError(RuntimeError):
    """A server did not start or did not stop."""


class _PortTaken(ServiceError):
    """Another process took the free port between our probe and the server's bind."""


def find_program(name: str, package: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in SYSTEM_DIRS:
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    raise ServiceUnavailable(
        f"{name} is not installed (not on PATH nor in {', '.join(SYSTEM_DIRS)}): install "
        f"Debian's {package!r} package: " + SETUP_HINT.format(package=package)
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """The processes below ``pid``: a server's workers and backends (PostgreSQL's call setsid,
    so their process group is not the server's)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def require_loopback(address: str) -> str:
    """``address`` is ``host:port`` on this machine: tests never send traffic anywhere else."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    loopback = host == "localhost"
    if not loopback:
        with contextlib.suppress(ValueError):
            loopback = ipaddress.ip_address(host).is_loopback
    if not sep or not port.isdigit() or not loopback:
        raise ValueError(f"{address!r} is not a loopback host:port such as '127.0.0.1:8000'")
    return address


def _service_user() -> pwd.struct_passwd | None:
    return pwd.getpwnam(SERVICE_USER) if os.geteuid() == 0 else None


def _make_workdir(name: str) -> Path:
    base = tempfile.gettempdir()
    user = _service_user()
    if user is not None and not os.stat(base).st_mode & 0o001:
        base = "/tmp"  # the service user must be able to reach its folder
    workdir = Path(tempfile.mkdtemp(prefix=f"edgetelemetry-{name}-", dir=base))
    if user is not None:
        os.chown(workdir, user.pw_uid, user.pw_gid)
    return workdir


def _give_to_service_user(root: Path) -> None:
    user = _service_user()
    if user is None:
        return
    for folder, dirs, files in os.walk(root):
        for name in (folder, *(os.path.join(folder, n) for n in dirs + files)):
            os.chown(name, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _run_as_service_user(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    user = _service_user()
    identity: dict[str, Any] = {}
    if user is not None:
        identity = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    return subprocess.run(
        list(argv), cwd=cwd, env=_server_env(cwd), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, **identity,
    )


def _server_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HOME=str(workdir), LC_ALL="C")
    return env


def _log_tail(path: Path, start: int = 0, lines: int = 25) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(start)
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class Service:
    """One server process on loopback in its own folder; a context manager that starts and stops.

    Start it from a thread that lives as long as the server: the parent-death signal goes with
    the thread that started the process, not the whole test process.
    """

    name = "service"
    stop_signal = signal.SIGTERM
    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, port: int | None = None) -> None:
        self.host = HOST
        self.port: int = port or 0
        self._fixed_port = port is not None
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    # what a kind of server fills in
    def _find_programs(self) -> None:
        """Look the programs up before anything is made (raises ServiceUnavailable)."""

    def _setup(self) -> None:
        """Once per start, in self.workdir: data folders, keys."""

    def _configure(self) -> None:
        """Once per attempt, when self.port is known: config files."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        return port_open(self.port)

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self: _S) -> _S:
        if self.running:
            return self
        self._find_programs()
        self.workdir = _make_workdir(self.name)
        try:
            self._setup()
            attempts = 1 if self._fixed_port else 3
            for attempt in range(1, attempts + 1):
                if not self._fixed_port:
                    self.port = free_port()
                self._configure()
                _give_to_service_user(self.workdir)
                try:
                    self._launch()
                    break
                except _PortTaken:
                    if attempt == attempts:
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        assert self.workdir is not None
        user = _service_user()
        identity: dict[str, Any] = {}
        if user is not None:
            identity = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        argv = self._command()
        setpriv = shutil.which("setpriv")
        if setpriv:
            # the server gets SIGTERM if this process dies without stopping it (set after the
            # user switch, which would clear it; kept across exec)
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self.process = subprocess.Popen(
                argv, cwd=self.workdir, env=_server_env(self.workdir), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **identity,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                tail = _log_tail(self.log_path, self._log_start)
                self._reap()
                if "address already in use" in tail.lower():
                    raise _PortTaken(f"{self.name}: port {self.port} taken:\n{tail}")
                raise ServiceError(f"{self.name} exited with {code} before answering:\n{tail}")
            if self._ready():
                return
            time.sleep(0.05)
        tail = _log_tail(self.log_path, self._log_start)
        self._reap()
        raise ServiceError(
            f"{self.name} did not answer on {self.host}:{self.port} in {self.start_timeout:.0f} s:"
            f"\n{tail}"
        )

    def pids(self) -> set[int]:
        """The server's processes now: the one started and every process below it."""
        if not self.running:
            return set()
        assert self.process is not None
        return {self.process.pid} | descendants(self.process.pid)

    def _reap(self) -> None:
        """Stop the server (its first process, with its own stop signal) and wait until every
        one of its processes is gone; SIGKILL what is left after stop_timeout."""
        proc = self.process
        if proc is None:
            return
        family = {proc.pid} | descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.stop_timeout)
        deadline = time.monotonic() + self.stop_timeout
        while any(pid_alive(pid) for pid in family):
            if time.monotonic() > deadline:
                for pid in family:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
                left = sorted(pid for pid in family if pid_alive(pid))
                if left:
                    raise ServiceError(f"{self.name}: processes {left} survive SIGKILL")
                break
            time.sleep(0.02)

    def restart(self) -> None:
        """Stop the server's processes and start them again on the same port, with the same
        folder and data (a broker outage, a database restart)."""
        self._reap()
        self._launch()

    def stop(self) -> None:
        """Stop the server and remove its folder; safe to call again."""
        try:
            self._reap()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PostgreSQL(Service):
    """A PostgreSQL cluster made by initdb in a temporary folder.

    TCP on 127.0.0.1 with a password (scram-sha-256) for the superuser ``postgres``; the unix
    socket lies in the server's own folder (trust, reachable by its user only). ``fsync`` and
    friends are off: tests survive a killed server process but not a power cut, which they do
    not simulate. The server runs in the foreground under this process (what ``pg_ctl start``
    runs), so its pid is known and its log is in the folder.
    """

    name = "postgresql"
    stop_signal = signal.SIGINT  # "fast" shutdown: ends the sessions, then exits cleanly
    superuser = "postgres"

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.password = secrets.token_urlsafe(18)
        self.bindir: Path | None = None
        self._admin: Any = None
        self._databases = itertools.count(1)

    def _find_programs(self) -> None:
        folders = []
        initdb = shutil.which("initdb")
        if initdb:
            folders.append(Path(initdb).resolve().parent)
        by_version = sorted(glob.glob(POSTGRESQL_DIRS), key=_version_key, reverse=True)
        folders += [Path(f) for f in by_version]
        for folder in folders:
            if (folder / "initdb").exists() and (folder / "postgres").exists():
                self.bindir = folder
                return
        raise ServiceUnavailable(
            f"PostgreSQL's server (initdb, postgres) is not on PATH nor in {POSTGRESQL_DIRS}: "
            "install Debian's 'postgresql' package: " + SETUP_HINT.format(package="postgresql")
        )

    @property
    def data_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    def _setup(self) -> None:
        assert self.workdir is not None and self.bindir is not None
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        _give_to_service_user(self.workdir)
        done = _run_as_service_user(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
             f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            cwd=self.workdir,
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise ServiceError(f"initdb failed ({done.returncode}):\n{done.stdout}")

    def _command(self) -> list[str]:
        assert self.workdir is not None and self.bindir is not None
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            "max_connections": "200",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _ready(self) -> bool:
        # the postmaster writes "ready" as the 8th line of its pid file once it accepts
        # connections (what pg_ctl -w waits for)
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and port_open(self.port)

    def url(self, dbname: str = "postgres") -> str:
        user = urllib.parse.quote(self.superuser)
        password = urllib.parse.quote(self.password, safe="")
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def _admin_connection(self) -> Any:
        if self._admin is None or self._admin.closed:
            try:
                import psycopg
            except ImportError as exc:
                raise ServiceUnavailable(
                    "psycopg is not installed: pip install -e '.[test]'"
                ) from exc
            self._admin = psycopg.connect(self.url(), autocommit=True)
        return self._admin

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (``test_N`` unless named) and return its URL."""
        name = name or f"test_{next(self._databases)}"
        from psycopg import sql

        self._admin_connection().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        from psycopg import sql

        self._admin_connection().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def stop(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None
        super().stop()


def _version_key(folder: str) -> tuple[int, ...]:
    version = Path(folder).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class Prometheus(Service):
    """A Prometheus server scraping loopback targets, with its data in a temporary folder.

    Prometheus answers at once, but its first scrape comes about 5 s after the start: its
    discovery manager hands targets to the scrapers every 5 s, and 2.42 has no flag for that.
    ``wait_for`` polls through it.
    """

    name = "prometheus"

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        scrape_interval: str = "1s",
        metrics_path: str = "/metrics",
        job: str = "test",
        scrape_configs: Sequence[dict[str, Any]] | None = None,
        port: int | None = None,
    ) -> None:
        """Scrape ``targets`` (``host:port`` on loopback) at ``metrics_path`` as ``job``, or use
        the given ``scrape_configs`` (Prometheus' own schema, as dicts) instead."""
        super().__init__(port)
        if scrape_configs is None:
            static = [{"targets": [require_loopback(t) for t in targets]}]
            scrape_configs = [{"job_name": job, "metrics_path": metrics_path,
                               "static_configs": static}]
        else:
            for config in scrape_configs:
                for static in config.get("static_configs", []):
                    for target in static.get("targets", []):
                        require_loopback(target)
        self.config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": list(scrape_configs),
        }
        self.program = ""

    def _find_programs(self) -> None:
        self.program = find_program("prometheus", "prometheus")

    def _configure(self) -> None:
        assert self.workdir is not None
        # JSON is YAML: no YAML writer needed
        (self.workdir / "prometheus.yml").write_text(json.dumps(self.config, indent=1))

    def _command(self) -> list[str]:
        assert self.workdir is not None
        return [self.program, f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}"]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result of an instant PromQL query (a vector's samples, each metric and value)."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.load(response)
        if answer.get("status") != "success":
            raise ServiceError(f"prometheus query {promql!r} failed: {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Query until the result is not empty (the first scrapes take an interval or two)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.2)


BALANCE_DIRECTIVES = {"round_robin": "", "least_conn": "least_conn;", "ip_hash": "ip_hash;",
                      "random": "random;"}


class NginxProxy(Service):
    """nginx as a reverse proxy / load balancer in front of loopback upstreams, TLS optional.

    The client's Host header (port included) reaches the upstreams unchanged, so requests signed
    for the proxy's address (SigV4) verify behind it; X-Forwarded-For and -Proto are set.
    """

    name = "nginx"

    def __init__(
        self,
        upstreams: Sequence[str],
        *,
        tls: bool = False,
        balance: str = "round_robin",
        location_directives: str = "",
        port: int | None = None,
    ) -> None:
        """``upstreams``: ``host:port`` on loopback; ``balance``: one of BALANCE_DIRECTIVES;
        ``location_directives``: nginx directives added to the proxying location (for example
        ``proxy_next_upstream error timeout non_idempotent;``)."""
        super().__init__(port)
        if not upstreams:
            raise ValueError("nginx_proxy needs at least one upstream")
        if balance not in BALANCE_DIRECTIVES:
            raise ValueError(f"balance {balance!r}: choose one of {sorted(BALANCE_DIRECTIVES)}")
        self.upstreams = [require_loopback(u) for u in upstreams]
        self.tls = tls
        self.balance = balance
        self.location_directives = location_directives
        self.ca_file: Path | None = None
        self.program = ""

    def _find_programs(self) -> None:
        self.program = find_program("nginx", "nginx")

    def _setup(self) -> None:
        assert self.workdir is not None
        if self.tls:
            self.ca_file = _write_self_signed_tls(self.workdir, self.host)

    def _configure(self) -> None:
        assert self.workdir is not None
        w = self.workdir
        servers = "\n".join(f"    server {u};" for u in self.upstreams)
        tls = ""
        if self.tls:
            tls = (f"    ssl_certificate {w / 'server.crt'};\n"
                   f"    ssl_certificate_key {w / 'server.key'};\n")
        temp = "\n".join(
            f"  {kind}_temp_path {w / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (w / "nginx.conf").write_text(f"""\
daemon off;
worker_processes 1;
pid {w / 'nginx.pid'};
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
  access_log {w / 'access.log'};
{temp}
  upstream backends {{
    {BALANCE_DIRECTIVES[self.balance]}
{servers}
  }}
  server {{
    listen {self.host}:{self.port}{' ssl' if self.tls else ''};
{tls}    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      {self.location_directives}
    }}
  }}
}}
""")

    def _command(self) -> list[str]:
        assert self.workdir is not None
        return [self.program, "-p", f"{self.workdir}/", "-c", str(self.workdir / "nginx.conf"),
                "-e", "stderr"]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this proxy's certificate authority (and nothing else)."""
        if self.ca_file is None:
            raise ValueError("this proxy has no TLS (start it with tls=True)")
        return ssl.create_default_context(cafile=str(self.ca_file))


def _write_self_signed_tls(folder: Path, host: str) -> Path:
    """A throwaway certificate authority and a server certificate it signs for ``host`` and
    localhost: server.crt and server.key (for the server), ca.crt (for clients)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(hours=1),
             "not_valid_after": now + datetime.timedelta(days=2)}

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder(subject_name=name("edgetelemetry test CA"),
                                issuer_name=name("edgetelemetry test CA"),
                                public_key=ca_key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder(subject_name=name(host), issuer_name=ca_cert.subject,
                                public_key=key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "server.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (folder / "server.key").chmod(0o600)
    (folder / "server.crt").write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    (folder / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    return folder / "ca.crt"


class Mosquitto(Service):
    """A mosquitto MQTT broker on loopback: anonymous clients, no persistence."""

    name = "mosquitto"

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.program = ""

    def _find_programs(self) -> None:
        self.program = find_program("mosquitto", "mosquitto")

    def _configure(self) -> None:
        assert self.workdir is not None
        (self.workdir / "mosquitto.conf").write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
        )

    def _command(self) -> list[str]:
        assert self.workdir is not None
        return [self.program, "-c", str(self.workdir / "mosquitto.conf")]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


# ---- pytest fixtures ----


def start_or_fail(service: _S) -> _S:
    """Start a server; a missing program fails the test (never a skip) with what to install."""
    try:
        service.start()
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    return service


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgreSQL]:
    with contextlib.ExitStack() as stack:
        server = PostgreSQL()
        stack.callback(server.stop)
        start_or_fail(server)
        yield server


@pytest.fixture
def postgresql_url(postgresql_server: PostgreSQL) -> Iterator[str]:
    """A fresh empty database for one test; the superuser's URL, password included."""
    url = postgresql_server.create_database()
    try:
        yield url
    finally:
        postgresql_server.drop_database(urllib.parse.urlsplit(url).path.lstrip("/"))


@pytest.fixture
def prometheus_server() -> Iterator[Callable[..., Prometheus]]:
    """``prometheus_server(targets, **options)``: a started Prometheus (see Prometheus)."""
    with contextlib.ExitStack() as stack:

        def start(targets: Sequence[str] = (), **options: Any) -> Prometheus:
            server = Prometheus(targets, **options)
            stack.callback(server.stop)
            start_or_fail(server)
            return server

        yield start


@pytest.fixture
def nginx_proxy() -> Iterator[Callable[..., NginxProxy]]:
    """``nginx_proxy(upstreams, tls=False, ...)``: a started NginxProxy (see NginxProxy)."""
    with contextlib.ExitStack() as stack:

        def start(upstreams: Sequence[str], **options: Any) -> NginxProxy:
            proxy = NginxProxy(upstreams, **options)
            stack.callback(proxy.stop)
            start_or_fail(proxy)
            return proxy

        yield start


@pytest.fixture(scope="session")
def mosquitto_broker() -> Iterator[Mosquitto]:
    with contextlib.ExitStack() as stack:
        broker = Mosquitto()
        stack.callback(broker.stop)
        start_or_fail(broker)
        yield broker


# ---- outside pytest ----


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.realservices",
        description="Start one real server on loopback, print its address, stop it on Ctrl-C.",
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    kinds.add_parser("postgresql", aliases=["postgres"])
    kinds.add_parser("mosquitto")
    prom = kinds.add_parser("prometheus")
    prom.add_argument("targets", nargs="+", help="host:port on loopback to scrape")
    proxy = kinds.add_parser("nginx")
    proxy.add_argument("upstreams", nargs="+", help="host:port on loopback to proxy to")
    proxy.add_argument("--tls", action="store_true")
    args = parser.parse_args(argv)

    service: Service
    try:
        if args.kind in ("postgresql", "postgres"):
            service = PostgreSQL()
        elif args.kind == "mosquitto":
            service = Mosquitto()
        elif args.kind == "prometheus":
            service = Prometheus(args.targets)
        else:
            service = NginxProxy(args.upstreams, tls=args.tls)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        with service:
            if isinstance(service, PostgreSQL):
                print(service.url(), flush=True)
            elif isinstance(service, (Mosquitto, Prometheus, NginxProxy)):
                print(service.url, flush=True)
            if isinstance(service, NginxProxy) and service.ca_file:
                print(f"(CA certificate: {service.ca_file})", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                while service.running:
                    time.sleep(0.5)
    except (ServiceUnavailable, ServiceError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
