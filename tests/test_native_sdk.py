"""The native SDK: `make install` layout and pkg-config, the C and C++ examples, instrumentation
compiled out at zero cost, and one process recording from Python and C into one recorder."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sysconfig
from typing import Any

import pytest

import edgetelemetry as et
from edgetelemetry.heartbeat.payload import DeviceIdentity, build_heartbeat

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
HEADER = CSRC / "include" / "edgetelemetry.h"
CC = os.environ.get("CC") or shutil.which("cc") or "gcc"
CXX = os.environ.get("CXX") or shutil.which("c++") or "g++"


def _version() -> tuple[str, str]:
    """(version, soname) as csrc/Makefile derives them from the header."""
    text = HEADER.read_text()
    major, minor, patch = (
        re.search(rf"#define ET_VERSION_{part} (\d+)", text).group(1)  # type: ignore[union-attr]
        for part in ("MAJOR", "MINOR", "PATCH")
    )
    soversion = f"0.{minor}" if major == "0" else major
    return f"{major}.{minor}.{patch}", f"libedgetelemetry.so.{soversion}"


def _run(cmd: list[str], **kwargs: Any) -> str:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        pytest.fail(
            f"{shlex.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc.stdout


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The SDK as `make -C csrc install PREFIX=...` lays it out."""
    prefix = tmp_path_factory.mktemp("sdk")
    _run(["make", "-s", "-C", str(CSRC), "install", f"PREFIX={prefix}"])
    return prefix


def _pkg_config(sdk: pathlib.Path, *args: str) -> list[str]:
    env = dict(os.environ, PKG_CONFIG_PATH=str(sdk / "lib" / "pkgconfig"))
    return shlex.split(_run(["pkg-config", *args, "edgetelemetry"], env=env))


def test_install_lays_out_libraries_header_and_pkg_config(sdk: pathlib.Path) -> None:
    version, soname = _version()
    lib = sdk / "lib"
    assert (sdk / "include" / "edgetelemetry.h").read_bytes() == HEADER.read_bytes()
    real = lib / f"libedgetelemetry.so.{version}"
    assert real.is_file() and not real.is_symlink()
    assert os.readlink(lib / soname) == real.name
    assert os.readlink(lib / "libedgetelemetry.so") == soname
    assert (lib / "libedgetelemetry.a").is_file()
    assert f"Library soname: [{soname}]" in _run(["readelf", "-d", str(real)])
    exported = [
        line.split()[-1]
        for line in _run(["nm", "-D", "--defined-only", str(real)]).splitlines()
        if line.strip()
    ]
    assert exported and all(name.startswith("et_") for name in exported), exported
    assert _pkg_config(sdk, "--modversion") == [version]
    assert _pkg_config(sdk, "--cflags", "--libs") == [
        f"-I{sdk}/include",
        f"-L{sdk}/lib",
        "-ledgetelemetry",
        "-pthread",
        "-lm",
    ]
    assert _pkg_config(sdk, "--static", "--libs") == _pkg_config(sdk, "--libs")


PROGRAM = r"""
#include <edgetelemetry.h>
#include <stdio.h>
int main(void) {
    et_recorder *rec;
    uint32_t id;
    et_window *w;
    et_series_stats st;
    if (et_recorder_new(NULL, &rec) || et_series_add(rec, "m", "1", "latency", NULL, &id))
        return 1;
    for (int i = 1; i <= 3; i++) et_record(rec, id, i);
    if (et_window_close(rec, &w) || et_window_series_stats(w, id, &st)) return 1;
    printf("%llu %g\n", (unsigned long long)st.count, st.sum);
    et_window_free(w);
    et_recorder_free(rec);
    return 0;
}
"""


@pytest.mark.parametrize("compiler", [CC, CXX], ids=["c", "c++"])
def test_a_program_links_with_one_pkg_config_flag(
    sdk: pathlib.Path, tmp_path: pathlib.Path, compiler: str
) -> None:
    suffix = ".c" if compiler == CC else ".cpp"
    src = tmp_path / f"prog{suffix}"
    src.write_text(PROGRAM)
    exe = tmp_path / "prog"
    flags = _pkg_config(sdk, "--cflags", "--libs")
    _run([compiler, str(src), "-o", str(exe), *flags, f"-Wl,-rpath,{sdk}/lib"])
    assert _run([str(exe)]).split() == ["3", "6"]


@pytest.mark.parametrize("linkage", ["shared", "archive", "static"])
def test_pkg_config_libs_alone_links_shared_and_static(
    sdk: pathlib.Path, tmp_path: pathlib.Path, linkage: str
) -> None:
    """`pkg-config --libs edgetelemetry`, without `--static`, is all a link needs, whichever
    library it ends up with: the shared one, the archive alone (a prefix without the `.so`),
    or `-static` (libc too).  The archive's own needs (`exp2` from libm, pthreads) must come
    from the `.pc` file's `Libs`: issue 12's `cc infer.c $(pkg-config ...)` failed there."""
    if linkage == "static" and not _links_statically(tmp_path):
        pytest.skip("no static C library (libc.a) on this machine")
    prefix = sdk
    if linkage == "archive":  # the same install without the shared library
        prefix = tmp_path / "sdk-archive"
        shutil.copytree(sdk, prefix, symlinks=True)
        for so in (prefix / "lib").glob("libedgetelemetry.so*"):
            so.unlink()
        pc = prefix / "lib" / "pkgconfig" / "edgetelemetry.pc"
        pc.write_text(pc.read_text().replace(str(sdk), str(prefix)))
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "prog"
    flags = _pkg_config(prefix, "--cflags", "--libs")
    extra = ["-static"] if linkage == "static" else [f"-Wl,-rpath,{prefix}/lib"]
    _run([CC, str(src), "-o", str(exe), *extra, *flags])
    needed = _run(["readelf", "-d", str(exe)])
    assert ("libedgetelemetry.so" in needed) == (linkage == "shared"), needed
    assert _run([str(exe)]).split() == ["3", "6"]


def _links_statically(tmp_path: pathlib.Path) -> bool:
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    return subprocess.run([CC, "-static", str(probe), "-o", str(tmp_path / "probe")],
                          capture_output=True, check=False).returncode == 0


def test_examples_build_and_account_exactly(sdk: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = _run(
        [
            "make", "-C", str(ROOT / "examples"), "check", f"BUILD={tmp_path}",
            f"ET_PREFIX={sdk}", "ITERATIONS=3000", "WORKERS=2",
        ]
    )  # fmt: skip
    assert "infer_loop: ok: 12000 records made, " in out, out
    assert "infer_loop_cpp: ok: 12000 records made, " in out, out
    assert out.count("telemetry compiled out (ET_DISABLE): 6000 inferences") == 2, out
    assert "MISMATCH" not in out


INSTRUMENTED = r"""
#include <edgetelemetry.h>
#include <time.h>
double model(double x);
static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
double step(et_recorder *rec, uint32_t latency, uint32_t confidence, double x) {
    ET_INSTRUMENT(const int64_t t0 = now_ns();)
    const double y = model(x);
    ET_INSTRUMENT(et_record(rec, latency, (double)(now_ns() - t0) / 1e6);)
    et_record(rec, confidence, y);
    return y;
}
"""

PLAIN = r"""
#include <stdint.h>
typedef struct et_recorder et_recorder;
double model(double x);
double step(et_recorder *rec, uint32_t latency, uint32_t confidence, double x) {
    (void)rec, (void)latency, (void)confidence;
    return model(x);
}
"""


def _function_asm(compiler: str, src: pathlib.Path, *flags: str) -> list[str]:
    """The instructions of `step` (C linkage), compiled at -O2."""
    asm = _run([compiler, "-O2", "-S", "-o", "-", f"-I{HEADER.parent}", *flags, str(src)])
    body = asm.split("\nstep:\n", 1)[1].split(".cfi_endproc", 1)[0]
    return [
        line.strip()
        for line in body.splitlines()
        if line.startswith("\t") and not line.strip().startswith(".")
    ]


@pytest.mark.parametrize("compiler", [CC, CXX], ids=["c", "c++"])
def test_compiled_out_instrumentation_costs_nothing(tmp_path: pathlib.Path, compiler: str) -> None:
    suffix = ".c" if compiler == CC else ".cpp"
    wrap = (lambda s: s) if suffix == ".c" else (lambda s: f'extern "C" {{\n{s}\n}}')
    instrumented, plain = tmp_path / f"instrumented{suffix}", tmp_path / f"plain{suffix}"
    instrumented.write_text(
        INSTRUMENTED if suffix == ".c" else "#include <edgetelemetry.h>\n" + wrap(INSTRUMENTED)
    )
    plain.write_text(wrap(PLAIN))
    off = _function_asm(compiler, instrumented, "-DET_DISABLE")
    assert off == _function_asm(compiler, plain), off
    on = _function_asm(compiler, instrumented)
    assert any("et_record" in line for line in on) and any("clock_gettime" in line for line in on)
    # and with no optimisation, still nothing to link: no et_ symbol is referenced
    obj = tmp_path / "off.o"
    _run([compiler, "-O0", "-c", "-DET_DISABLE", f"-I{HEADER.parent}", str(instrumented),
          "-o", str(obj)])  # fmt: skip
    assert not [s for s in _run(["nm", "-u", str(obj)]).split() if s.startswith("et_")]


def test_every_public_function_is_documented_in_the_header() -> None:
    documented, undocumented = False, []
    for line in HEADER.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            documented = False
        elif stripped.endswith("*/"):
            documented = True
        elif stripped.startswith("ET_API "):
            name = re.search(r"(et_\w+)\s*\(", stripped)
            if not documented and name:
                undocumented.append(name.group(1))
    assert not undocumented


# ---- one process, two languages ----


@pytest.fixture(scope="module")
def native_ext(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """tests/native_ext/, compiled with the system compiler against this Python's headers."""
    out = tmp_path_factory.mktemp("native_ext") / "et_native_ext.abi3.so"
    _run(
        [
            CC, "-shared", "-fPIC", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
            f"-I{sysconfig.get_paths()['include']}", f"-I{HEADER.parent}",
            str(ROOT / "tests" / "native_ext" / "et_native_ext.c"), "-o", str(out), "-pthread",
        ]
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location("et_native_ext", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _handle(rec: et.Recorder) -> tuple[int, int]:
    """The handle a native module needs: the (et_api table, et_recorder) addresses."""
    return rec.native_handle()


def test_c_threads_record_into_the_recorder_python_created(native_ext: Any) -> None:
    n, threads = 5000, 3
    # rings deep enough to hold everything undrained: nothing can be dropped
    with et.Recorder(max_threads=8, ring_capacity=1 << 14, collector_period=0.001) as rec:
        latency = rec.histogram("latency", unit="ms", model="resnet18", version="1.0")
        for _ in range(1000):
            latency.record(2.0)
        api, address = _handle(rec)
        sid, kept, dropped = native_ext.record_from_c(
            api, address, "resnet18", "1.0", "preprocess", n, threads
        )
        # the same names from C are the same series as Python's handle
        same, kept_same, _ = native_ext.record_from_c(
            api, address, "resnet18", "1.0", "latency", 500, 1
        )
        assert same == latency.series_id and sid != same
        snap = rec.snapshot()
        info = rec.info()
    assert (kept, dropped, kept_same) == (n * threads, 0, 500)
    by_metric = {s.metric: s for s in snap.series}
    c = by_metric["preprocess"]
    assert (c.count, c.sum, c.min, c.max, c.dropped) == (
        n * threads,
        threads * n * (n + 1) / 2,
        1.0,
        float(n),
        {},
    )
    py = by_metric["latency"]
    assert (py.count, py.sum, py.unit) == (1500, 2000.0 + 500 * 501 / 2, "ms")
    assert info["unknown_series"] == 0

    # and the heartbeat built from that snapshot carries both languages' series
    params = build_heartbeat([snap], DeviceIdentity("edge-device-1", "fleet-1"))
    (model,) = params["Models"]
    values = {m["MetricName"]: m["Value"] for m in model["ModelMetrics"]}
    assert values["preprocess-count"] == float(n * threads)
    assert values["latency-ms-count"] == 1500.0


def test_the_extension_refuses_a_table_older_than_it_needs(native_ext: Any) -> None:
    import ctypes

    fake = (ctypes.c_uint32 * 16)(0)  # abi_version 0, then nothing
    with et.Recorder(collector_period=None) as rec:
        _, address = _handle(rec)
        with pytest.raises(RuntimeError, match="et_api version 0, this module needs 1"):
            native_ext.record_from_c(ctypes.addressof(fake), address, "m", "1", "x", 1, 1)
