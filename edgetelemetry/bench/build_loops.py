"""cffi build script of ``edgetelemetry.bench._loops``: the bench's C loops (``loops.c``).

A module of its own, not compiled into the core: it includes the public header for the
``et_api`` table and links nothing of the core (it records through the table it is handed).
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "loops_cdef.h").read_text())
ffibuilder.set_source(
    "edgetelemetry.bench._loops",
    '#include "edgetelemetry.h"',
    sources=[str((HERE / "loops.c").relative_to(ROOT))],
    include_dirs=[str((ROOT / "csrc" / "include").relative_to(ROOT))],
    extra_compile_args=["-std=c11", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra"],
    py_limited_api=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
