"""Build glue only: metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    cffi_modules=[
        "edgetelemetry/_native/build_core.py:ffibuilder",
        "edgetelemetry/bench/build_loops.py:ffibuilder",
    ],
    ext_modules=[
        Extension(
            "edgetelemetry._native._fastpath",
            sources=["edgetelemetry/_native/fastpath.c"],
            include_dirs=["csrc/include"],
            extra_compile_args=["-std=c11", "-O2"],
            py_limited_api=True,
        )
    ],
    # every extension is a limited-API build: tag the wheel cp39-abi3 (one wheel per
    # architecture serves every CPython >= 3.9) rather than the building interpreter's cpXY
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
