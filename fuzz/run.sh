#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets, one after another, for a while each; see README
# "Reliability" for what each target checks and what the last runs found.
#
#   bash fuzz/run.sh                     # every target, 120 s each
#   DURATION=600 bash fuzz/run.sh body   # one target, 10 minutes
#
# Installs cargo-fuzz from crates.io when it is missing. cargo-fuzz passes nightly-only flags to
# rustc (sanitizer coverage, -Zsanitizer); the machine has one stable toolchain, and
# RUSTC_BOOTSTRAP=1 lets it accept them. The seeds in fuzz/corpus/TARGET are read, never written:
# what the run discovers goes to fuzz/target/corpus/TARGET (not committed) and crashes to
# fuzz/artifacts/TARGET. Prints one FUZZ_RESULT line per target and exits 1 if any target failed.
#
# Settings (environment):
#   DURATION=120      seconds per target
#   SANITIZER=address address | none (none runs about twice as fast; the crate forbids unsafe code)
#   NICE=10           niceness of the fuzzing processes
#   TIMEOUT=10        seconds one input may take before libFuzzer calls it a hang
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"

DURATION=${DURATION:-120}
SANITIZER=${SANITIZER:-address}
NICE=${NICE:-10}
TIMEOUT=${TIMEOUT:-10}
ALL=(resolve canonical headers body config)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

say() { printf '[fuzz] %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

say "building ${TARGETS[*]} (sanitizer: $SANITIZER)"
for t in "${TARGETS[@]}"; do
    nice -n "$NICE" cargo fuzz build --fuzz-dir "$ROOT" --sanitizer "$SANITIZER" --debug-assertions "$t"
done

failed=0
mkdir -p "$ROOT/target/logs"
for t in "${TARGETS[@]}"; do
    scratch="$ROOT/target/corpus/$t"
    log="$ROOT/target/logs/$t.log"
    mkdir -p "$scratch" "$ROOT/corpus/$t" "$ROOT/artifacts/$t"
    say "$t: ${DURATION}s (log: $log)"
    status=0
    nice -n "$NICE" cargo fuzz run --fuzz-dir "$ROOT" --sanitizer "$SANITIZER" --debug-assertions "$t" \
        "$scratch" "$ROOT/corpus/$t" -- \
        -max_total_time="$DURATION" -timeout="$TIMEOUT" -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*corp: \([0-9]*\).*/cov=\1 corpus=\2/p')
    crashes=$(find "$ROOT/artifacts/$t" -type f | wc -l)
    echo "FUZZ_RESULT target=$t seconds=$DURATION runs=$(stat number_of_executed_units) execs_per_sec=$(stat average_exec_per_sec) $cov new_units=$(stat new_units_added) peak_rss_mb=$(stat peak_rss_mb) exit=$status artifacts=$crashes"
    if [ "$status" -ne 0 ]; then
        failed=1
        say "$t failed; the input is in fuzz/artifacts/$t, the report in $log:"
        grep -E -A12 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -40 >&2 || true
    fi
done
exit "$failed"
