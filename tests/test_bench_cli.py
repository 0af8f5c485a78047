"""``edgetelemetry bench``: the quick run, its JSON and chart, and benchmarks/compare.py."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import struct
import subprocess
import sys
import time
import zlib
from typing import Any

import pytest

from edgetelemetry import Recorder, bench
from edgetelemetry.bench.inference import (
    BUDGET_NS,
    TARGET_US,
    Workload,
    matmul_step,
    measure_workload,
    onnx_mlp_model,
    target_verdict,
)
from edgetelemetry.bench.measure import cpu_model
from edgetelemetry.bench.plot import chart_data, write_png_chart
from edgetelemetry.bench.stats import quantile, trimmed_mean, trimmed_mean_ci

ROOT = pathlib.Path(__file__).resolve().parents[1]

MACHINE_FIELDS = {"cpu", "arch", "cores", "python", "package_version", "emulated", "os"}
FIGURES = {
    "baseline.empty_call", "baseline.c_call", "baseline.cffi_noop", "baseline.cffi_shape",
    "baseline.empty_with", "baseline.c_noop",
    "record", "time", "group", "c_record_cffi", "c_record", "record_many", "baseline.copy",
    "drain",
    "window", "peer.prometheus", "peer.otel",
}


def _compare_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "benchmarks/compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _png_size(data: bytes) -> tuple[int, int]:
    """Check a PNG chunk by chunk (CRCs, IHDR, IDAT length) and return (width, height)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks.append(kind)
        if kind == b"IDAT":
            idat += body
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    assert width > 100 and height > 100
    if (depth, color) == (8, 2):  # ours: RGB, filter byte per row
        assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    return width, height


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "edgetelemetry.bench", "--quick", "--json", str(out / "b.json"),
         "--plot", str(out / "b.png")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return {
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "doc": json.loads((out / "b.json").read_text()),
        "json_path": out / "b.json",
        "png": (out / "b.png").read_bytes(),
    }


def test_quick_run_prints_table_and_progress(quick_run: dict[str, Any]) -> None:
    out, err = quick_run["stdout"], quick_run["stderr"]
    assert "record(v)" in out and "compared with" in out
    assert "empty Python call" in out
    assert "[ 1/" in err and "done in" in err  # progress on stderr, not in the table
    steps = [tuple(map(int, m)) for m in re.findall(r"\[ *(\d+)/(\d+)\]", err)]
    assert [k for k, _ in steps] == list(range(1, len(steps) + 1)), err
    assert {n for _, n in steps} == {len(steps)}, err  # the total is right: it ends at n/n
    assert not any(line.startswith("bench ") for line in out.splitlines())


def test_json_has_machine_and_every_figure(quick_run: dict[str, Any]) -> None:
    doc = quick_run["doc"]
    assert doc["schema"] == bench.SCHEMA
    assert MACHINE_FIELDS <= set(doc["machine"])
    assert doc["machine"]["package_version"]
    assert set(doc["figures"]) == FIGURES
    for key, f in doc["figures"].items():
        if f.get("skipped"):
            assert key.startswith("peer."), key  # only optional peers may be missing
            continue
        assert f["median"] > 0, key
        assert f["p25"] <= f["median"] <= f["p75"], key
        assert f["unit"].startswith("ns/"), key
        if f.get("baseline"):
            assert f["baseline"] in doc["figures"] and f["ratio"] > 0, key
    assert doc["figures"]["record"]["baseline"] == "baseline.empty_call"
    assert doc["figures"]["record"]["dropped"] == 0
    assert 0 < doc["figures"]["window"]["core_share_at_interval"] < 0.01
    assert doc["figures"]["window"]["values_per_window"] == 16 * 2000


def test_json_has_inference_overhead_with_ci(quick_run: dict[str, Any]) -> None:
    inf = quick_run["doc"]["inference"]
    pytest.importorskip("numpy")
    assert inf["metrics_per_inference"] == 4 and inf["agent"]
    for key in ("matmul", "mlp", "conv"):
        w = inf["workloads"][key]
        for figures in (w, w["wall_clock"]):
            lo, hi = figures["overhead_ci95_pct"]
            assert lo <= figures["overhead_pct"] <= hi
        assert w["pairs"] >= 6 and w["inference_ns"] > 0
        if "pairs_per_size" in w:  # the matmul, re-sized while measured
            assert sum(w["pairs_per_size"].values()) == w["pairs"]
            assert w["inferences_per_side"] >= w["pairs"]
        else:
            assert w["inferences_per_side"] == w["pairs"] * w["block_inferences"]
        assert w["recording"].startswith("group.start()")
    assert "onnx" in inf["workloads"]
    target = inf["target"]
    assert target["verdict"] in ("met", "missed", "inconclusive", "not judged under emulation")
    assert target["met"] == {"met": True, "missed": False}.get(target["verdict"])
    assert target["lower_ci_ns"] <= target["telemetry_ns"] <= target["upper_ci_ns"]


def test_plot_is_a_valid_png(quick_run: dict[str, Any], tmp_path: pathlib.Path) -> None:
    _png_size(quick_run["png"])
    # and the built-in writer, whatever the CLI used
    path = tmp_path / "fallback.png"
    write_png_chart(chart_data(quick_run["doc"]), str(path))
    _, height = _png_size(path.read_bytes())
    assert height > 300


def test_runs_without_numpy_peers_or_matplotlib(tmp_path: pathlib.Path) -> None:
    """An installed wheel on a device: no numpy, no peers, no matplotlib."""
    code = (
        "import sys\n"
        "for m in ('numpy', 'prometheus_client', 'opentelemetry', 'matplotlib', 'onnxruntime'):\n"
        "    sys.modules[m] = None\n"
        "from edgetelemetry.bench import main\n"
        f"sys.exit(main(['--quick', '-q', '--json', {str(tmp_path / 'b.json')!r}, "
        f"'--plot', {str(tmp_path / 'b.png')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["figures"]["record_many"]["buffer"] == "array.array"
    assert doc["figures"]["peer.prometheus"]["skipped"].startswith("prometheus_client")
    assert doc["inference"]["skipped"].startswith("numpy is not installed")
    assert "built-in PNG writer" in proc.stderr
    _png_size((tmp_path / "b.png").read_bytes())
    assert proc.stderr.count("bench ") == 0  # -q: no progress


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--agent-interval", "0"])
    assert exc.value.code == 2


def test_compare_flags_a_synthetic_regression(quick_run: dict[str, Any],
                                              tmp_path: pathlib.Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    compare = _compare_module()
    doc = json.loads(quick_run["json_path"].read_text())
    # documents before the C loop figure carried an estimate here, which may come out < 0
    doc["figures"]["c_record"]["median"] = 3.0
    doc["figures"]["c_record"]["estimate"] = "difference of two cffi calls of the same shape"
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert compare.main([str(old), str(old)]) == 0
    doc["figures"]["record"]["median"] *= 1.6
    doc["figures"]["record"]["ratio"] *= 1.6
    doc["figures"]["c_record"]["median"] = 27.0  # a noisy estimate: shown, never gated
    new = tmp_path / "new.json"
    new.write_text(json.dumps(doc))
    capsys.readouterr()
    assert compare.main([str(old), str(new)]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("record(v)"))
    assert "1.600x" in line and "REGRESSED" in line
    assert "not gated" in next(x for x in out.splitlines() if x.startswith("C et_record ("))
    assert compare.main([str(old), str(new), "--threshold", "2"]) == 0
    assert compare.main([str(old), str(new), "--by", "ratio"]) == 1


def test_compare_reads_the_pytest_summary_and_rates(tmp_path: pathlib.Path) -> None:
    compare = _compare_module()

    def summary(record: float, rate: float) -> str:
        return json.dumps({"machine": {"cpu": "x", "arch": "y", "python": "3"}, "results": {
            "python record()": {"value": record, "unit": "ns/call"},
            "sustained 2 threads": {"value": rate, "unit": "M rec/s"},
            "inference overhead: matmul": {"value": 0.4, "unit": "%"},
        }})

    (tmp_path / "a.json").write_text(summary(24.0, 1.0))
    (tmp_path / "b.json").write_text(summary(25.0, 0.5))  # half the rate: 2x worse
    (tmp_path / "c.json").write_text(json.dumps({"benchmarks": [
        {"name": "test_x", "fullname": "t::test_x", "stats": {"median": 1e-6}}]}))
    (tmp_path / "d.json").write_text(json.dumps({"benchmarks": [
        {"name": "test_x", "fullname": "t::test_x", "stats": {"median": 3e-6}}]}))
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                         "--max-overhead-increase", "0.5"]) == 0
    assert compare.main([str(tmp_path / "c.json"), str(tmp_path / "d.json")]) == 1
    assert compare.main([str(tmp_path / "c.json"), str(tmp_path / "c.json")]) == 0
    (tmp_path / "bad.json").write_text("[]")
    assert compare.main([str(tmp_path / "a.json"), str(tmp_path / "bad.json")]) == 2


def test_onnx_model_built_in_code_runs() -> None:
    np = pytest.importorskip("numpy")
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((256, 128)).astype(np.float32)
    w2 = rng.standard_normal((128, 10)).astype(np.float32)
    session = ort.InferenceSession(onnx_mlp_model(w1.tobytes(), w2.tobytes()),
                                   providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, 256)).astype(np.float32)
    (p,) = session.run(None, {"x": x})
    logits = np.maximum(x @ w1, 0) @ w2
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(p, want, rtol=1e-4, atol=1e-6)


def test_cpu_names_from_arm_cpuinfo() -> None:
    assert cpu_model({"cpu implementer": "0x41", "cpu part": "0xd08"}) == "Cortex-A72"
    assert cpu_model({"processor": "0", "cpu implementer": "0x41", "cpu part": "0xd42"}) == \
        "Cortex-A78AE"
    assert cpu_model({"model name": "ARMv7 Processor rev 4 (v7l)"}).startswith("ARMv7")
    assert "0xfff" in cpu_model({"cpu implementer": "0x41", "cpu part": "0xfff"})


def test_statistics() -> None:
    assert quantile([3, 1, 2, 4], 0.5) == 2.5
    assert trimmed_mean([100.0, -100.0] + [1.0, 2.0, 3.0] * 3) == 2.0  # outliers cut
    # Yuen's interval: 1..5 four times, 10% trimmed: k=2, winsorized = the same values, so
    # se = sd / (0.8 sqrt(20)) and t(0.975, 15) = 2.131
    xs = [1.0, 2.0, 3.0, 4.0, 5.0] * 4
    lo, hi = trimmed_mean_ci(xs)
    sd = (sum((x - 3.0) ** 2 for x in xs) / 19) ** 0.5
    half = 2.131 * sd / (0.8 * 20**0.5)
    assert abs(lo - (3.0 - half)) < 0.005 and abs(hi - (3.0 + half)) < 0.005
    # the interval shrinks as 1/sqrt(n) and covers the centre
    lo4, hi4 = trimmed_mean_ci(xs * 4)
    assert lo < lo4 < 3.0 < hi4 < hi
    assert trimmed_mean_ci([7.0]) == (7.0, 7.0)
    with pytest.raises(ValueError):
        trimmed_mean_ci([])


def _spinning_workload(size: int) -> Workload:
    """A model whose CPU time goes as size**3, as a matmul's does: size 100 takes the target."""

    def arrays(n: int) -> tuple[Any, list[Any]]:
        cost_ns = TARGET_US * 1e3 * (n / 100) ** 3

        def infer(x: Any) -> tuple[Any, float]:
            end = time.thread_time_ns() + cost_ns
            while time.thread_time_ns() < end:
                pass
            return x, 0.5

        return infer, [memoryview(bytearray(8))]  # has .nbytes, as an ndarray does

    infer, inputs = arrays(size)
    return Workload("matmul", "spin", "spin", infer, inputs, size=size, arrays=arrays)


def test_the_matmul_is_resized_to_the_target_while_measured() -> None:
    # size 128 takes 2.1x the target (more, with the spin's overshoot): the first check
    # moves it to about 100 (a step of 8 either way), where it stays
    with Recorder() as rec:
        result = measure_workload(_spinning_workload(128), rec, seconds=1.5, block_s=0.002)
    assert 128 in result.sizes and len(result.sizes) >= 2, result.sizes
    assert result.last_size is not None and 88 <= result.last_size <= 104, result.sizes
    assert sum(result.sizes.values()) == result.pairs
    smallest = min(result.sizes)
    assert result.label == f"numpy matmul n={smallest}..128 float32 (~100 us)"
    assert result.to_json()["pairs_per_size"] == {str(n): c for n, c in
                                                   sorted(result.sizes.items())}


def test_a_matmul_at_the_target_keeps_its_size() -> None:
    with Recorder() as rec:
        result = measure_workload(_spinning_workload(96), rec, seconds=1.2, block_s=0.002)
    assert result.sizes.keys() == {96}, result.sizes  # 88 us, with the overshoot about 100
    assert result.label == "numpy matmul 96x96 float32 (~100 us)"


def test_matmul_step_follows_the_cube_law_in_steps_of_8_and_at_most_2x() -> None:
    assert matmul_step(184, 100.0, 100.0) == 184
    assert matmul_step(184, 800.0, 100.0) == 96  # half the size: an eighth of the time
    assert matmul_step(184, 1e6, 100.0) == 96  # never more than 2x in one step
    assert matmul_step(100, 1.0, 100.0) == 200
    assert matmul_step(8, 1e6, 100.0) == 8 and matmul_step(2048, 1.0, 100.0) == 2048
    assert all(matmul_step(n, t, 100.0) % 8 == 0 for n in (64, 184) for t in (37.0, 260.0))


def test_target_verdict_needs_the_whole_ci_on_one_side() -> None:
    assert target_verdict(0.5 * BUDGET_NS, 0.9 * BUDGET_NS) == "met"
    assert target_verdict(1.1 * BUDGET_NS, 1.4 * BUDGET_NS) == "missed"
    assert target_verdict(0.8 * BUDGET_NS, 1.2 * BUDGET_NS) == "inconclusive"
    assert target_verdict(0.8 * BUDGET_NS, BUDGET_NS) == "inconclusive"


def test_inference_floor_script_runs_and_reports_every_loop() -> None:
    pytest.importorskip("numpy")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/inference_floor.py"),
                          "--seconds", "1"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    rows = {line[:16].strip(): line[16:] for line in out.splitlines()[2:]}
    assert set(rows) == {"group", "stdlib", "nbytes", "group - stdlib"}, out
    for text in rows.values():  # "+865 ns  [+784, +947]"
        value, ci = text.split(" ns  ")
        lo, hi = (float(x) for x in ci.strip("[]").split(", "))
        assert lo <= float(value) <= hi, out


def test_attached_mode_times_the_shared_paths_against_in_process(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgetelemetry.bench.command import main

    out = tmp_path / "b.json"
    assert main(["--quick", "-q", "--attached", "--no-inference", "--no-peers", "--json",
                 str(out), "--plot", str(tmp_path / "b.png")]) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["attached"] is True
    figures = doc["figures"]
    for kind in ("record", "c_record"):
        fig, base = figures[f"attached.{kind}"], figures[f"baseline.own_{kind}"]
        assert fig["baseline"] == f"baseline.own_{kind}" and base["kind"] == "baseline"
        assert fig["rounds"] == base["rounds"] == 7 and fig["ratio"] > 0
        assert fig["target_ratio"] == 1.1
    assert figures["attached.c_record"]["dropped"] == 0
    table = capsys.readouterr().out
    assert re.search(r"record\(v\), attached .*x record\(v\), own recorder", table), table
    _png_size((tmp_path / "b.png").read_bytes())
    # the bench left no segment behind
    assert not [p for p in pathlib.Path("/dev/shm").glob("et-bench-attached-*")
                if p.stat().st_mtime > time.time() - 60]
