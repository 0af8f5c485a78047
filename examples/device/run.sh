#!/usr/bin/env bash
# The device scenario (issue 14): one agent per device, every process on it records into it.
#
#   bash examples/device/run.sh [--work DIR] [--scale X] [--sdk PREFIX]
#
# 1. the SDK is installed into a prefix (make -C csrc install PREFIX=...), and a C and a C++
#    producer are built against it with `pkg-config edgetelemetry` and nothing else;
# 2. the endpoint starts (edgetelemetry serve on loopback: a fresh store, a fresh key);
# 3. the device agent starts (edgetelemetry agent --config agent.json): it creates the
#    device's shared recorder, a segment file every producer attaches to by path;
# 4. four producers record at once: Python (two threads), Python with a multiprocessing pool
#    of 3 workers, C (until it is killed), C++ (two threads, groups);
# 5. mid-run the C producer is killed with SIGKILL (stopped first at a moment it is outside
#    et_record, so the count its progress record gives is exact; its ring still holds records
#    no one has drained), and the agent is restarted once (SIGTERM, then a new agent over the
#    same segment) while the others record;
# 6. once the producers are done, the endpoint's stored counts must equal, per producer,
#    exactly what it recorded; the agent is stopped (SIGTERM) and the counts checked again.
#
# The last line is "delivered N of N records, lost 0, duplicated 0"; the exit status is 0
# only then.  Needs python3 with edgetelemetry installed, cc, c++, make and pkg-config.
# For an emulated run (scripts/build-wheels.sh --test): PYTHON (the target's), ET_RUN (an
# emulator prefix such as "qemu-aarch64 -L ROOT"), CC, CXX (cross compilers), --sdk (an SDK
# built for the target), --scale (fewer records); CHECK_PYTHON runs check.py (host python).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

WORK=
SCALE=1
SDK=
while [ $# -gt 0 ]; do
  case $1 in
    --work) WORK=$2; shift ;;
    --scale) SCALE=$2; shift ;;
    --sdk) SDK=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
CHECK_PY=${CHECK_PYTHON:-$PY}
read -r -a RUN <<<"${ET_RUN:-}"
CC=${CC:-cc}
CXX=${CXX:-c++}
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/et-device.XXXXXX")
  KEEP=0
else
  mkdir -p "$WORK"
  KEEP=1
fi
WORK=$(cd "$WORK" && pwd)
[ -z "$SDK" ] || SDK=$(cd "$SDK" && pwd)
# Everything runs from the work directory: `python -m edgetelemetry` started from a checkout
# would import the checkout (the first entry of sys.path), not the installed package.
cd "$WORK"
DEVICE=jetson-01
FLEET=line-1
scaled() { "$CHECK_PY" -c "import sys; print(max(1, int($1 * float(sys.argv[1]))))" "$SCALE"; }

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$KEEP" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '[%5.1fs] %s\n' "$(( $(date +%s%N) / 1000000 - T0 ))e-3" "$*" >&2; }
T0=$(( $(date +%s%N) / 1000000 ))
die() { echo "run.sh: $*" >&2; exit 1; }
# wait_for TEXT FILE N SECONDS PID: until FILE holds TEXT N times (PID must stay alive)
wait_for() {
  local deadline=$(( $(date +%s) + $4 ))
  while [ "$(grep -c -- "$1" "$2" 2>/dev/null || true)" -lt "$3" ]; do
    kill -0 "$5" 2>/dev/null || { cat "$2" >&2; die "exited before printing '$1'"; }
    [ "$(date +%s)" -lt "$deadline" ] || { cat "$2" >&2; die "no '$1' in $4 s"; }
    sleep 0.1
  done
}

# ---- 1. the SDK in a prefix, the native producers built with pkg-config ----
if [ -z "$SDK" ]; then
  SDK=$WORK/sdk
  make -s -C "$REPO/csrc" install PREFIX="$SDK" CC="$CC" >"$WORK/sdk.log" 2>&1 \
    || { cat "$WORK/sdk.log" >&2; die "make -C csrc install failed"; }
fi
export PKG_CONFIG_PATH=$SDK/lib/pkgconfig
ET_FLAGS=$(pkg-config --cflags --libs edgetelemetry)
LIBDIR=$(pkg-config --variable=libdir edgetelemetry)
# shellcheck disable=SC2086 # the flags are words
$CC -std=c11 -O2 -Wall -Wextra -Werror "$HERE/producer.c" -o "$WORK/producer_c" $ET_FLAGS \
  -Wl,-rpath,"$LIBDIR"
# shellcheck disable=SC2086
$CXX -std=c++17 -O2 -Wall -Wextra -Werror "$HERE/producer.cpp" -o "$WORK/producer_cpp" \
  $ET_FLAGS -Wl,-rpath,"$LIBDIR" -pthread ${CXX_LINK_FLAGS:-}
say "SDK in $SDK; C and C++ producers built with: pkg-config --cflags --libs edgetelemetry"

# ---- 2. the endpoint ----
KEY=AKIDDEVICE$RANDOM$RANDOM
SECRET=$("$CHECK_PY" -c 'import secrets; print(secrets.token_urlsafe(30))')
umask 077
printf '{"%s": "%s"}\n' "$KEY" "$SECRET" >"$WORK/keys.json"
printf '{"fleets": [{"name": "%s", "devices": ["%s"]}]}\n' "$FLEET" "$DEVICE" >"$WORK/registry.json"
"${RUN[@]}" "$PY" -m edgetelemetry serve --store "$WORK/fleet.sqlite3" --port 0 \
  --credentials-file "$WORK/keys.json" --registry "$WORK/registry.json" >"$WORK/serve.log" 2>&1 &
SERVE=$!
PIDS+=("$SERVE")
wait_for "listening on http://" "$WORK/serve.log" 1 120 "$SERVE"
URL=$(grep -o 'listening on http://[0-9.:]*' "$WORK/serve.log" | head -n1 | cut -d' ' -f3)
say "endpoint $URL"

# ---- 3. the device agent ----
cat >"$WORK/agent.json" <<EOF
{
  "device_name": "$DEVICE",
  "fleet_name": "$FLEET",
  "endpoint_url": "$URL",
  "aws_access_key_id": "$KEY",
  "aws_secret_access_key": "$SECRET",
  "interval_s": 1,
  "jitter": 0,
  "spool_dir": "spool",
  "segment_path": "run/recorder",
  "max_threads": 32
}
EOF
SEGMENT=$WORK/run/recorder
AGENT=
STARTS=0
start_agent() {
  "${RUN[@]}" "$PY" -m edgetelemetry agent --config "$WORK/agent.json" >>"$WORK/agent.log" 2>&1 &
  AGENT=$!
  PIDS+=("$AGENT")
  STARTS=$((STARTS + 1))
  wait_for "ready: segment" "$WORK/agent.log" "$STARTS" 120 "$AGENT"
}
stop_agent() {
  kill -TERM "$AGENT"
  local rc=0
  wait "$AGENT" || rc=$?
  [ "$rc" = 0 ] || { cat "$WORK/agent.log" >&2; die "the agent exited $rc on SIGTERM"; }
}
start_agent
say "agent ready (segment $SEGMENT)"

# ---- 4. the producers ----
N_PY=$(scaled 20000)
N_POOL=$(scaled 10000)
N_CPP=$(scaled 100000)
SECONDS_EACH=${ET_DEVICE_SECONDS:-6}
"${RUN[@]}" "$PY" "$HERE/producer.py" "$SEGMENT" py-service "$N_PY" "$SECONDS_EACH" --threads 2 \
  >"$WORK/py.report" 2>"$WORK/py.err" &
P_PY=$!
"${RUN[@]}" "$PY" "$HERE/producer.py" "$SEGMENT" py-workers "$N_POOL" "$SECONDS_EACH" --pool 3 \
  >"$WORK/pool.report" 2>"$WORK/pool.err" &
P_POOL=$!
"${RUN[@]}" "$WORK/producer_cpp" "$SEGMENT" cpp-pipeline "$N_CPP" "$SECONDS_EACH" \
  >"$WORK/cpp.report" 2>"$WORK/cpp.err" &
P_CPP=$!
"${RUN[@]}" "$WORK/producer_c" "$SEGMENT" c-camera 0 0 "$WORK/c.progress" \
  >"$WORK/c.out" 2>"$WORK/c.err" &
P_C=$!
PIDS+=("$P_PY" "$P_POOL" "$P_CPP" "$P_C")
say "producers: python (2 threads), python pool (3 workers), C++ (2 threads), C (until killed)"

# ---- 5. SIGKILL the C producer mid-run, at a moment its progress record is exact ----
C_MIN=$(scaled 200000)
deadline=$(( $(date +%s) + 120 ))
until [ -s "$WORK/c.progress" ] && [ "$("$CHECK_PY" "$HERE/check.py" progress "$WORK/c.progress" | cut -d' ' -f1)" -ge "$C_MIN" ]; do
  kill -0 "$P_C" 2>/dev/null || { cat "$WORK/c.err" >&2; die "the C producer died"; }
  [ "$(date +%s)" -lt "$deadline" ] || die "the C producer recorded too little"
  sleep 0.05
done
stopped_state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null; }
killed=0
for _ in $(seq 1 500); do
  kill -STOP "$P_C"
  until [ "$(stopped_state "$P_C")" = T ]; do sleep 0.001; done
  read -r recorded busy < <("$CHECK_PY" "$HERE/check.py" progress "$WORK/c.progress")
  if [ "$busy" = 0 ]; then
    kill -KILL "$P_C"
    wait "$P_C" 2>/dev/null || true
    echo "c-camera $recorded" >"$WORK/c.report"
    killed=1
    break
  fi
  kill -CONT "$P_C"
  sleep 0.01
done
[ "$killed" = 1 ] || die "could not catch the C producer outside et_record"
say "C producer SIGKILLed after $recorded records (what its ring held is the agent's to drain)"

stop_agent
say "agent stopped (SIGTERM) while the producers record"
start_agent
say "agent restarted over the same segment"

# ---- 6. the count ----
for pid in "$P_PY" "$P_POOL" "$P_CPP"; do
  wait "$pid" || { cat "$WORK"/*.err >&2; die "a producer failed"; }
done
say "producers done: $(cat "$WORK/py.report" "$WORK/pool.report" "$WORK/cpp.report" | tr '\n' ' ')"
REPORTS=("$WORK/py.report" "$WORK/pool.report" "$WORK/cpp.report" "$WORK/c.report")
"$CHECK_PY" "$HERE/check.py" verify "$WORK/fleet.sqlite3" "$DEVICE" "${REPORTS[@]}" \
  --wait "${ET_DEVICE_WAIT:-90}" >/dev/null 2>&1 || true
stop_agent
say "agent stopped; the endpoint's store, per producer:"
"$CHECK_PY" "$HERE/check.py" verify "$WORK/fleet.sqlite3" "$DEVICE" "${REPORTS[@]}"
