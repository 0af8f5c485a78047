"""The device agent's systemd unit (contrib/systemd/edgetelemetry-agent.service) says what
works: ``systemd-analyze verify`` accepts it, its command line passes the agent's own option
checks with the example configuration beside it, and the daemon does what the unit expects of
it: the segment in ``$RUNTIME_DIRECTORY``, the spool in ``$STATE_DIRECTORY``, ``READY=1`` on
``$NOTIFY_SOCKET`` (systemd itself, as PID 1, is not here: its side is played by the test)."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgetelemetry.agent import daemon

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "contrib" / "systemd" / "edgetelemetry-agent.service"
EXAMPLE = REPO / "contrib" / "systemd" / "agent.json"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text().replace("\\\n", " "))
    return parser


def unit_command() -> list[str]:
    return shlex.split(unit()["Service"]["ExecStart"])


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    command = unit_command()
    assert command[0] == "/opt/edgetelemetry/bin/edgetelemetry" and command[1] == "agent"
    # the same unit, its program pointed at this checkout's command (verify checks it exists)
    program = Path(sys.executable).parent / "edgetelemetry"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(command[0], str(program)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if UNIT.name in line or "error" in line.lower()]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_the_units_command_line_passes_the_agents_checks() -> None:
    args = daemon.parser().parse_args(unit_command()[2:])
    assert args.config == "/etc/edgetelemetry/agent.json"
    args.config = str(EXAMPLE)  # the example the unit's comment installs there
    config, gid = daemon.check_options(args)
    assert config.device_name == "jetson-01" and gid is None
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert service["RuntimeDirectory"] == "edgetelemetry"
    assert service["RuntimeDirectoryMode"] == "0750"
    assert service["RuntimeDirectoryPreserve"] == "yes"  # the segment outlives a restart
    assert service["StateDirectory"] == "edgetelemetry"
    assert service["User"] and service["Group"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["RestartPreventExitStatus"] == str(daemon.EXIT_CONFIG)
    assert service["KillSignal"] == "SIGTERM"


def test_the_daemon_keeps_the_units_contract(tmp_path: Path) -> None:
    """What systemd gives the unit, given to the daemon by hand: the directories it made, a
    notify socket; the example configuration names neither a segment nor a spool."""
    runtime, state = tmp_path / "run" / "edgetelemetry", tmp_path / "lib" / "edgetelemetry"
    runtime.mkdir(parents=True, mode=0o750)
    state.mkdir(parents=True, mode=0o700)
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({**json.loads(EXAMPLE.read_text()),
                                  "endpoint_url": "http://127.0.0.1:9", "interval_s": 1}))
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETELEMETRY_")}
    env.update(RUNTIME_DIRECTORY=str(runtime), STATE_DIRECTORY=str(state),
               NOTIFY_SOCKET=notify_path, JOURNAL_STREAM="8:1",
               AWS_ACCESS_KEY_ID="AKIDUNIT", AWS_SECRET_ACCESS_KEY="unit-test-secret",
               AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    check = subprocess.run([sys.executable, "-m", "edgetelemetry", "agent", "--config",
                            str(config), "--check"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert check.returncode == 0, check.stderr
    assert f"segment {runtime}/recorder" in check.stdout
    assert f"spool {state}/spool" in check.stdout
    proc = subprocess.Popen([sys.executable, "-m", "edgetelemetry", "agent", "--config",
                             str(config)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert notify.recv(4096).decode().startswith("READY=1")
        assert (runtime / "recorder").exists() and (state / "spool").is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.stderr is not None
    lines = proc.stderr.read().splitlines()
    assert lines and all(line.startswith("<") for line in lines), lines
    assert (runtime / "recorder").exists()  # RuntimeDirectoryPreserve keeps it for the next
