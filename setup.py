"""Build glue only: metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    cffi_modules=["edgetelemetry/_ffi_build.py:ffibuilder"],
    ext_modules=[
        Extension(
            "edgetelemetry._fastpath",
            sources=["edgetelemetry/_fastpath.c"],
            include_dirs=["csrc/include"],
            extra_compile_args=["-std=c11", "-O2"],
            py_limited_api=True,
        )
    ],
    # both extensions are limited-API builds: tag the wheel cp39-abi3 (one wheel per
    # architecture serves every CPython >= 3.9) rather than the building interpreter's cpXY
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
