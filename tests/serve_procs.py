"""``edgetelemetry serve`` as a real process for the tests: embedded or ``--workers N``.

``ServeProcess(workdir, *extra_args)`` writes a credentials file (mode 0600) and a registry,
starts the command in its own session, waits for "listening on URL", and on ``stop()`` sends
SIGTERM and waits, then kills whatever of its process group is left.  Its stderr (the log) is a
file, read with ``log()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest_server import AKID, DEVICE, FLEET, SECRET

REPO = Path(__file__).resolve().parents[1]


def write_private(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


def serve_env() -> dict[str, str]:
    path = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class ServeProcess:
    def __init__(
        self,
        workdir: Path,
        *args: str,
        credentials: dict[str, Any] | None = None,
        devices: list[str] | None = None,
        store: str | None = None,
        port: int = 0,
        registry: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.credentials_file = write_private(
            workdir / "credentials.json", credentials or {AKID: SECRET}
        )
        self.store = store or str(workdir / "endpoint.sqlite3")
        self.args = [
            "--store", self.store, "--port", str(port), "--credentials-file",
            str(self.credentials_file), *args,
        ]
        if registry:
            path = workdir / "registry.json"
            path.write_text(
                json.dumps({"fleets": [{"name": FLEET, "devices": devices or [DEVICE, "cam-2"]}]})
            )
            self.args += ["--registry", str(path)]
        self.start_timeout = start_timeout
        self.log_path = workdir / f"serve-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> ServeProcess:
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgetelemetry", "serve", *self.args],
            stdout=subprocess.PIPE, stderr=log, text=True, env=serve_env(),
            start_new_session=True, cwd=self.workdir,
        )
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            if self.proc.poll() is not None:
                break
            line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"serve did not start: {line!r}\n{self.log()[-3000:]}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """``kill -9`` of the master and every worker at once (its whole session)."""
        proc, self.proc = self.proc, None
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def stop(self, timeout: float = 20.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a killed master
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
