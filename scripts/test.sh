#!/usr/bin/env bash
# The whole test suite from a fresh machine: set-up, Python tests, C tests (plain, ASan+UBSan,
# TSan), the instruction-count gates, and the benchmark ratio gates.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== C core: unit tests, sanitizers, instruction counts"
make -C csrc test
make -C csrc test CC=clang
make -C csrc asan
make -C csrc tsan
make -C csrc callgrind

echo "== benchmarks (ratio gates, absolute times reported)"
python -m pytest benchmarks -q -p no:cacheprovider --benchmark-disable-gc

echo "== Python tests"
python -m pytest tests -q -p no:cacheprovider
