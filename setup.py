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
)
