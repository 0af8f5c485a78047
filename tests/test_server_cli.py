"""``edgetelemetry serve`` as a process: credentials file rules, and no acknowledged heartbeat lost
to a ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_server import AKID, DEVICE, FLEET, SECRET, client, heartbeat

from edgetelemetry.server import (
    CredentialsFileError,
    Store,
    load_credentials_file,
    main,
    register_main,
)

REPO = Path(__file__).resolve().parents[1]


def write_private(path: Path, document: object, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(document))
    path.chmod(mode)
    return path


def test_credentials_file_must_be_private(tmp_path: Path) -> None:
    path = write_private(tmp_path / "creds.json", {AKID: SECRET}, mode=0o644)
    with pytest.raises(CredentialsFileError, match="chmod 600") as info:
        load_credentials_file(path)
    assert SECRET not in str(info.value)
    path.chmod(0o600)
    assert load_credentials_file(path)[AKID].secret_access_key == SECRET
    path.chmod(0o400)
    assert AKID in load_credentials_file(path)
    assert SECRET not in repr(load_credentials_file(path))


@pytest.mark.parametrize(
    "document",
    [
        [AKID, SECRET],
        {AKID: ""},
        {AKID: {"secret": SECRET}},
        {"bad/key": SECRET},
        {AKID: {"secret_access_key": SECRET, "fleets": FLEET}},
        {AKID: SECRET + "\udc80"},  # JSON's "\udc80" escape: no signer can encode it
        {AKID: {"secret_access_key": SECRET, "session_token": SECRET + "\ud800"}},
    ],
)
def test_malformed_credentials_never_echo_secrets(tmp_path: Path, document: object) -> None:
    path = write_private(tmp_path / "creds.json", document)
    with pytest.raises(CredentialsFileError) as info:
        load_credentials_file(path)
    assert SECRET not in str(info.value)


def test_invalid_json_credentials(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text('{"AKID": "' + SECRET + '",,}')
    path.chmod(0o600)
    with pytest.raises(CredentialsFileError, match="not valid JSON") as info:
        load_credentials_file(path)
    assert SECRET not in str(info.value)


def test_serve_refuses_a_readable_credentials_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_private(tmp_path / "creds.json", {AKID: SECRET}, mode=0o640)
    status = main(["--store", ":memory:", "--port", "0", "--credentials-file", str(path)])
    assert status == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and SECRET not in err


def test_register_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "s.db"
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"fleets": [{"name": FLEET, "devices": [DEVICE]}]}))
    assert register_main(["--store", str(store_path), str(registry)]) == 0
    assert json.loads(capsys.readouterr().out)["devices"] == 1
    with Store(str(store_path)) as store:
        assert [d.name for d in store.devices()] == [DEVICE]
    registry.write_text(json.dumps({"fleets": [{"name": "bad fleet"}]}))
    assert register_main(["--store", str(store_path), str(registry)]) == 2
    assert "pattern" in capsys.readouterr().err


def test_acknowledged_heartbeats_survive_kill_9(tmp_path: Path) -> None:
    store_path = tmp_path / "endpoint.sqlite3"
    creds = write_private(tmp_path / "creds.json", {AKID: SECRET})
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"fleets": [{"name": FLEET, "devices": [DEVICE]}]}))
    code = "import sys; from edgetelemetry.server import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--store",
            str(store_path),
            "--port",
            "0",
            "--credentials-file",
            str(creds),
            "--registry",
            str(registry),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split("listening on ", 1)[1].strip()
        edge = client(url)
        sent = 5
        for i in range(sent):
            params = heartbeat()
            params["Models"][0]["ModelMetrics"][0]["Value"] = float(i)
            assert edge.send_heartbeat(**params)["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook runs: only committed data remains
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert SECRET not in stderr
    with Store(str(store_path)) as store:  # reopening recovers the WAL
        assert store.heartbeat_count(DEVICE) == sent
        values = [p.value for p in store.metric_series(DEVICE, "resnet18", "latency-ms-p99")]
        assert sorted(values) == [float(i) for i in range(sent)]
