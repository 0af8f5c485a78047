"""The device scenario, examples/device/run.sh, as CI runs it: the endpoint, the device agent,
two Python producers (one a multiprocessing pool), a C and a C++ producer built with
``pkg-config edgetelemetry``; one producer SIGKILLed mid-run and the agent restarted once;
every record the producers made is stored by the endpoint exactly once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_record_of_every_process_arrives_exactly_once(tmp_path: Path) -> None:
    for tool in ("cc", "c++", "make", "pkg-config"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (scripts/setup.sh installs the build tools)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETELEMETRY_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    done = subprocess.run(["bash", str(ROOT / "examples" / "device" / "run.sh"), "--work",
                           str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=600)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    match = re.fullmatch(r"delivered (\d+) of (\d+) records, lost 0, duplicated 0", lines[-1])
    assert match and match.group(1) == match.group(2), done.stdout + done.stderr
    assert int(match.group(2)) >= 610_000 + 200_000  # the C producer: at least 200,000
    # what the run did, from its own log: the kill, the restart, four producers' reports
    assert "C producer SIGKILLed after" in done.stderr
    assert "agent restarted over the same segment" in done.stderr
    reports = [(tmp_path / f"{name}.report").read_text().split()
               for name in ("py", "pool", "cpp", "c")]
    assert [r[0] for r in reports] == ["py-service", "py-workers", "cpp-pipeline", "c-camera"]
    agent_log = (tmp_path / "agent.log").read_text()
    assert agent_log.count("ready: segment") == 2 and "generation 2" in agent_log
