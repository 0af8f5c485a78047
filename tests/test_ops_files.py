"""The shipped operations files say what works: the systemd unit passes ``systemd-analyze
verify`` and its command line is one ``serve`` accepts; the container file (there is no container
engine here to build it: linted instead) has a pinned base, a non-root user, a health check on
a route that exists, and a command ``serve`` accepts; the nginx front is exercised by the
slow-client and replica tests (nginx_front.py)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from edgetelemetry.server import cli

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "contrib" / "systemd" / "edgetelemetry-endpoint.service"
CONTAINERFILE = REPO / "contrib" / "container" / "Containerfile"


def unit_command() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.split("=", 1)[1])


def check_serve_args(argv: list[str]) -> None:
    """``argv`` (after ``edgetelemetry serve``) parses and passes every option check."""
    args = cli._serve_parser().parse_args(argv)
    cli._check_options(args)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    command = unit_command()
    assert command[0] == "/opt/edgetelemetry/bin/edgetelemetry" and command[1] == "serve"
    # the same unit, its program pointed at this checkout's command (verify checks it exists)
    program = Path(sys.executable).parent / "edgetelemetry"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(command[0], str(program)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if UNIT.name in line or "error" in line.lower()]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_systemd_unit_command_is_one_serve_accepts() -> None:
    command = unit_command()
    check_serve_args(command[2:])
    text = UNIT.read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text  # key rotation, docs/operations.md
    assert "--host 127.0.0.1" in text  # gunicorn behind the nginx front, never exposed alone


def containerfile_instructions() -> list[tuple[str, str]]:
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_containerfile_lints() -> None:
    instructions = containerfile_instructions()
    known = {"FROM", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK",
             "STOPSIGNAL", "ENTRYPOINT", "CMD", "ENV", "ARG", "LABEL"}
    assert {word for word, _ in instructions} <= known
    bases = [rest for word, rest in instructions if word == "FROM"]
    assert bases and all(re.fullmatch(r"\S+:\S+( AS \w+)?", b) for b in bases), bases
    assert all(":latest" not in b for b in bases)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the endpoint must not run as root"
    # what it installs exists: the extra, and the sources it copies
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "server" in extras and any("gunicorn" in dep for dep in extras["server"])
    entry = json.loads(next(rest for word, rest in instructions if word == "ENTRYPOINT"))
    command = json.loads(next(rest for word, rest in instructions if word == "CMD"))
    assert entry == ["edgetelemetry", "serve"]
    check_serve_args(command)
    assert "--behind-proxy" in command  # 0.0.0.0 inside the container, the front outside
    health = next(rest for word, rest in instructions if word == "HEALTHCHECK")
    assert "/readyz" in health and ":8080" in health and "--port" in command
    assert command[command.index("--port") + 1] == "8080"

