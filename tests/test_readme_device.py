"""The README's "One agent per device" section runs as written: its config file, its producer
and its shell block (the agent in the background, two producers, SIGTERM), against a real
endpoint, which must then hold every value both producers recorded; and the Python block of
docs/shared-recorder.md's Python side runs.  tests/test_docs.py runs every doc block too;
this also checks what the blocks should have done."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from stored_rows import stored_rows

from edgetelemetry.server import EndpointServer

ROOT = Path(__file__).resolve().parents[1]
KEY_ID, SECRET = "AKIDFLEETLINE1", "a-long-random-secret"


def section_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## One agent per device", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```([^\n]*)\n(.*?)```", section, re.S)


def test_the_readme_device_section_runs_and_delivers_every_value(tmp_path: Path) -> None:
    blocks = section_blocks()
    assert [info.split()[0] for info, _ in blocks] == ["json", "python", "sh"]
    with EndpointServer(str(tmp_path / "fleet.sqlite3"), credentials={KEY_ID: SECRET}) as srv:
        srv.store.register_fleet("line-1")
        srv.store.register_devices("line-1", ["cam-1", "cam-2"])
        endpoint = srv.url.split("://", 1)[1]
        shell = None
        for info, body in blocks:
            body = body.replace("127.0.0.1:8080", endpoint)
            name = re.search(r"file=(\S+)", info)
            if name:
                (tmp_path / name.group(1)).write_text(body)
            if info.startswith("sh"):
                shell = body
        assert shell is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGETELEMETRY_", "AWS_"))}
        env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                   AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                   AWS_CONFIG_FILE=str(tmp_path / "none"),
                   AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                   EDGETELEMETRY_SPOOL_DIR=str(tmp_path / "spool"))
        # its own session: a block that fails half-way leaves no agent behind
        proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", shell], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=180)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert done.returncode == 0, done.stdout + done.stderr
        count = sum(r.value or 0 for r in stored_rows(srv.store.path, "cam-1")
                    if r.metric == "latency-ms-count")
    assert count == 2000, done.stderr  # both producers' values, once
    assert "WARNING" not in done.stderr and "ERROR" not in done.stderr, done.stderr


def test_the_shared_recorder_pages_python_block_runs() -> None:
    """docs/shared-recorder.md's Python side: a producer and the agent's half, as written."""
    text = (ROOT / "docs" / "shared-recorder.md").read_text()
    section = text.split("## The Python side", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    env: dict[str, Any] = {}
    exec(compile(blocks[0], "docs/shared-recorder.md", "exec"), env)
    assert env["agent"].closed and env["seq"] == 0
