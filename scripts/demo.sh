#!/usr/bin/env bash
# The main job from a fresh machine: set-up, then the demo on the embedded default endpoint.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/edgetelemetry demo "$@"
