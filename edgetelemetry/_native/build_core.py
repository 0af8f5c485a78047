"""cffi build script (API mode, out of line): compiles the C core into
``edgetelemetry._native._core``.

Run by setup.py through ``cffi_modules``; the declarations live in ``core_cdef.h`` beside it,
checked against the public header by ``tests/test_cdef.py``.
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CSRC = ROOT / "csrc"
SOURCES = sorted(str(p.relative_to(ROOT)) for p in (CSRC / "src").glob("*.c"))

ffibuilder = FFI()
ffibuilder.cdef((HERE / "core_cdef.h").read_text())
ffibuilder.set_source(
    "edgetelemetry._native._core",
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
