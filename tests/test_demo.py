"""The README's main job runs end to end: endpoint, workload, agent, fleet summary; it leaves
nothing behind without --keep and says what to install without numpy."""

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edgetelemetry import demo


def test_demo_reports_to_the_embedded_endpoint(tmp_path) -> None:
    out = io.StringIO()
    assert demo.main(seconds=4, out=out, keep=str(tmp_path)) == 0
    text = out.getvalue()
    assert "heartbeat requests acknowledged" in text  # progress while it runs
    assert "demo-gateway-01  demo-fleet  connected" in text
    for model in ("mlp-classifier", "tiny-conv"):
        line = next(line for line in text.splitlines() if model in line)
        assert "active" in line and "latency-ms" in line
    assert "0 dead-lettered" in text
    stored = int(text.split(" heartbeats stored")[0].rsplit(" ", 1)[1])
    assert stored >= 3, "one heartbeat per interval at least, plus the final flush"
    assert "where to look next" in text and str(tmp_path) in text
    assert (tmp_path / "endpoint.sqlite").exists()


def test_without_keep_the_demo_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = io.StringIO()
    assert demo.main(seconds=2, out=out) == 0
    assert list(tmp_path.iterdir()) == []  # no edgetelemetry-demo-* left in the temp dir
    assert "edgetelemetry demo --keep DIR" in out.getvalue()


def test_without_numpy_the_demo_says_what_to_install(tmp_path) -> None:
    shadow = tmp_path / "numpy"  # an import of numpy fails, as on a machine without it
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'numpy'\")\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "edgetelemetry", "demo", "--seconds", "1"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "pip install 'edgetelemetry[demo]'" in done.stderr, done.stderr
