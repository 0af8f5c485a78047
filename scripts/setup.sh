#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for edgetelemetry: system packages (when root), a
# virtual environment in .venv, and the package built in place with its test extras.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
# chromium renders the fleet page in its test; the fonts give it text to draw
for tool in gcc:gcc clang:clang valgrind:valgrind make:make chromium:chromium; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
[ -d /usr/share/fonts/truetype/dejavu ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need_apt[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.edgetelemetry-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  # the in-place rebuild below uses the venv's own build tools: make them current
  .venv/bin/python -m pip install -q --upgrade pip 'setuptools>=77' wheel 'cffi>=1.17' >/dev/null
  .venv/bin/python -m pip install -q -e '.[test,bench,lint]'
  touch "$stamp"
else
  # sources may have changed: rebuild the extensions in place (fast when nothing did)
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi
