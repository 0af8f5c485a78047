#!/usr/bin/env bash
# The whole test suite from a fresh machine: set-up, types and lint, C tests (plain, clang,
# ASan+UBSan, TSan), the instruction-count gates, the three wheels tested on their
# architectures, the benchmark ratio gates, and the Python tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== types and lint: mypy --strict on the package, ruff (rules in pyproject.toml)"
mypy
ruff check edgetelemetry tests benchmarks scripts

echo "== C core: unit tests, sanitizers, instruction counts"
make -C csrc test
make -C csrc test CC=clang
make -C csrc asan
make -C csrc tsan
make -C csrc callgrind

echo "== wheels: x86_64, aarch64 and armv7l, each tested on its target (qemu-user)"
bash scripts/build-wheels.sh --test

echo "== benchmarks (ratio gates, absolute times reported)"
python -m pytest benchmarks -q -p no:cacheprovider --benchmark-disable-gc

echo "== Python tests"
python -m pytest tests -q -p no:cacheprovider
