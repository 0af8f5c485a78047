"""The ``edgetelemetry`` command's own surface: version, what the tool is, help where a command
is incomplete."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import edgetelemetry
from edgetelemetry.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgetelemetry", *args], capture_output=True,
                          text=True, timeout=60)


def test_version_is_the_package_version_and_pyproject_s() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"edgetelemetry {edgetelemetry.__version__}"
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared is not None and declared.group(1) == edgetelemetry.__version__


def test_help_says_what_the_tool_does() -> None:
    out = run("--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "Per-inference telemetry for edge devices" in text
    assert "SendHeartbeat" in text
    for command in ("demo", "serve", "register", "bench", "fleet"):
        assert re.search(rf"^\s+{command}\s", out.stdout, re.M), command


def test_no_command_shows_the_help(capsys) -> None:
    assert main([]) == 2
    assert "usage: edgetelemetry" in capsys.readouterr().out


def test_fleet_without_a_subcommand_shows_its_help() -> None:
    out = run("fleet")
    assert out.returncode == 2
    assert "usage: edgetelemetry fleet" in out.stdout
    assert re.search(r"^\s+status\s", out.stdout, re.M)
    assert "Traceback" not in out.stderr
