#!/bin/sh
# Instruction-count gate for the hot path.  Instruction counts, unlike times, are the same on
# every machine and every run, so they can be asserted.
#
#   sh bench/callgrind_gate.sh GATED_BINARY [REPORTED_BINARY...]
#
# Each workload of bench/callgrind_gate.c runs under callgrind with --toggle-collect on its
# entry point, at two sizes; (Ir(2N) - Ir(N)) / N is the marginal cost per record, with fixed
# costs (first-record ring claim, per-pass locking and clock reads amortised over a ring)
# cancelled.  Limits (override in the environment):
#   ET_GATE_RECORD  et_record, instructions per call           (20: the issue's target)
#   ET_GATE_DRAIN   et_collect, instructions per drained record (30)
#   ET_GATE_MANY    et_record_many, instructions per value      (10)
#   ET_GATE_BATCH   et_record_many past the ring, per value     (24: aggregated by the caller,
#                   about 2 ns a value; through the ring a value costs many + drain, 36)
#   ET_GATE_GROUP   et_record_group of 4 series, per value      (18: no more than et_record)
#   ET_GATE_RECORD  also gates et_record through a handle attached to a shared recorder: the
#                   same call, the same fast path
#   ET_GATE_DRAIN_SHARED  the agent's drain of a shared recorder, per record: each record
#                   journaled so that a producer or agent killed inside survives (60)
set -eu

RECORD_MAX=${ET_GATE_RECORD:-20}
DRAIN_MAX=${ET_GATE_DRAIN:-30}
MANY_MAX=${ET_GATE_MANY:-10}
BATCH_MAX=${ET_GATE_BATCH:-24}
GROUP_MAX=${ET_GATE_GROUP:-18}
DRAIN_SHARED_MAX=${ET_GATE_DRAIN_SHARED:-60}
N=${ET_GATE_N:-200000}

if ! command -v valgrind >/dev/null 2>&1; then
    echo "callgrind gate: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi
[ $# -ge 1 ] || { echo "usage: $0 GATED_BINARY [REPORTED_BINARY...]" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# total instructions inside $3 (inclusive) for `$1 $2 $4`
instructions() {
    out="$tmp/cg.$2.$4"
    valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
        --toggle-collect="$3" "$1" "$2" "$4" >"$tmp/log" 2>&1 || {
        echo "callgrind gate: '$1 $2 $4' failed:" >&2
        cat "$tmp/log" >&2
        exit 1
    }
    sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$out" | head -n 1
}

# per-record marginal cost, two decimals (nothing if a run failed)
per_record() {
    a=$(instructions "$1" "$2" "$3" "$N") && [ -n "$a" ] || return 0
    b=$(instructions "$1" "$2" "$3" "$((2 * N))") && [ -n "$b" ] || return 0
    awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN { printf "%.2f", (b - a) / n }'
}

status=0
check() { # name value limit gated
    case "$2" in
    [0-9]*) verdict=$(awk -v v="$2" -v m="$3" 'BEGIN { print (v <= m) ? "ok" : "OVER" }') ;;
    *) # a measurement failed (its error is above); that fails the gate too
        printf '  %-34s no measurement\n' "$1"
        status=1
        return ;;
    esac
    if [ "$4" = yes ]; then
        printf '  %-34s %7s instructions (limit %s) %s\n' "$1" "$2" "$3" "$verdict"
        [ "$verdict" = ok ] || status=1
    else
        printf '  %-34s %7s instructions\n' "$1" "$2"
    fi
}

gated=yes
for bin in "$@"; do
    if [ "$gated" = yes ]; then
        echo "callgrind gate: $bin (gated)"
    else
        echo "callgrind: $bin (reported only)"
    fi
    check "et_record, per call" "$(per_record "$bin" record et_record)" "$RECORD_MAX" "$gated"
    check "drain + aggregate, per record" "$(per_record "$bin" drain et_collect)" "$DRAIN_MAX" "$gated"
    check "et_record_many, per value" "$(per_record "$bin" many et_record_many)" "$MANY_MAX" "$gated"
    check "et_record_many > ring, per value" "$(per_record "$bin" batch et_record_many)" "$BATCH_MAX" "$gated"
    check "et_record_group of 4, per value" "$(per_record "$bin" group et_record_group)" "$GROUP_MAX" "$gated"
    check "et_record attached, per call" "$(per_record "$bin" record-attached et_record)" "$RECORD_MAX" "$gated"
    check "drain, shared (journaled), per record" "$(per_record "$bin" drain-shared et_collect)" "$DRAIN_SHARED_MAX" "$gated"
    gated=no
done
if [ "$status" -ne 0 ]; then
    echo "callgrind gate: FAILED (a hot path grew past its limit)"
else
    echo "callgrind gate: passed"
fi
exit "$status"
