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
# the real servers the tests start on loopback (tests/realservices.py); Debian keeps the
# PostgreSQL server binaries off PATH, in /usr/lib/postgresql/VERSION/bin
need_servers=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 \
  || need_servers+=(postgresql)
for tool in prometheus:prometheus nginx:nginx mosquitto:mosquitto; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] \
    || need_servers+=("${tool##*:}")
done
missing=("${need_apt[@]}" "${need_servers[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]}" >&2
    apt_start=$(date +%s)
    apt-get update -qq >/dev/null
    if [ ${#need_apt[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi
    if [ ${#need_servers[@]} -gt 0 ]; then
      # the tests start their own servers: keep the packages' system services from starting
      # (no systemd in a container; a started nginx would also hold port 80).  A policy-rc.d
      # already in place (Docker images ship one) is left as it is.
      own_policy=
      if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
      fi
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need_servers[@]}" >/dev/null
      if [ -n "$own_policy" ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
      fi
    fi
    echo "setup: apt-get took $(( $(date +%s) - apt_start )) s" >&2
  else
    echo "setup: please install: ${missing[*]}" >&2
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
  .venv/bin/python -m pip install -q -e '.[test,bench,lint,demo]'
  touch "$stamp"
else
  # sources may have changed: rebuild the extensions in place (fast when nothing did)
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi
