"""cffi build script (API mode, out of line): compiles the C core into ``edgetelemetry._core``.

Run by setup.py through ``cffi_modules``; the declarations live in ``_core_cdef.h`` (the core)
and ``_bench_cdef.h`` (``_bench_loops.c``: C loops that ``edgetelemetry bench`` times).
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
CSRC = ROOT / "csrc"
SOURCES = sorted(str(p.relative_to(ROOT)) for p in (CSRC / "src").glob("*.c")) + [
    str((HERE / "_bench_loops.c").relative_to(ROOT))
]

ffibuilder = FFI()
ffibuilder.cdef((HERE / "_core_cdef.h").read_text())
ffibuilder.cdef((HERE / "_bench_cdef.h").read_text())
ffibuilder.set_source(
    "edgetelemetry._core",
    '#include "edgetelemetry.h"',
    sources=SOURCES,
    include_dirs=[str((CSRC / "include").relative_to(ROOT)), str((CSRC / "src").relative_to(ROOT))],
    define_macros=[("ET_BUILDING", "1"), ("_GNU_SOURCE", "1")],
    extra_compile_args=["-std=c11", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra"],
    libraries=["pthread", "m"],
    py_limited_api=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
