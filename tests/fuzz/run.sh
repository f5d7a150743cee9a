#!/usr/bin/env bash
# Runs each fuzz target of holdfast's HTTP/1.1 wire rules for a bounded time:
#   tests/fuzz/run.sh [SECONDS-PER-TARGET]   (default 20)
# libFuzzer through libfuzzer-sys, built on the stable toolchain with the coverage
# instrumentation cargo-fuzz applies (cargo-fuzz itself wants a nightly toolchain for its
# sanitizer flags; the targets need none of them). Seeds are in seeds/, the growing corpus and
# any crash in target/. A crash fails the run and prints the input that caused it.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
export CARGO_TARGET_DIR="$PWD/target"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit target keeps the instrumentation off build scripts (as cargo-fuzz does).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --bins --target "$host"
bin="target/$host/release"
for target in request_head chunked response_head; do
  corpus="target/corpus/$target"
  mkdir -p "$corpus" target/crashes
  rm -f target/crashes/"$target"-*
  echo "fuzz: $target for ${seconds}s"
  status=0
  "$bin/$target" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=target/crashes/"$target"- "$corpus" "seeds/$target" \
    > "target/$target.log" 2>&1 || status=$?
  grep -E "^stat::(number_of_executed_units|new_units_added)" "target/$target.log" | tr '\n' ' '
  echo
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $target failed (exit $status):" >&2
    tail -40 "target/$target.log" >&2
    exit 1
  fi
done
echo "fuzz: no failure"
