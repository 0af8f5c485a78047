"""The README's main job runs end to end: endpoint, workload, agent, fleet summary."""

import io

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
