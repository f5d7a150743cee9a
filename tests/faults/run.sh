#!/usr/bin/env bash
# The fault matrix (tests/tests/faults.rs) on its own, printed as a table: every fault under load
# in a network namespace, with what the visitors saw. Needs root. `--release` measures the
# release build (as deployed); the default is the debug build CI tests.
#   tests/faults/run.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/prereqs.sh
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
cargo build "${profile[@]}" --workspace --locked --bins
out=$(mktemp)
trap 'rm -f "$out"' EXIT
HOLDFAST_SOAK_SECONDS=${HOLDFAST_SOAK_SECONDS:-60} \
  cargo test "${profile[@]}" --locked -p holdfast-tests --test faults -- --nocapture --test-threads 1 \
  2>&1 | tee "$out" | grep -E '^test |^soak|panicked' || true
echo
echo "| fault | requests | failed | longest request | to the other backend | failback | gateway's counters |"
echo "|---|---:|---:|---:|---:|---:|---|"
grep -o 'fault-matrix |.*' "$out" | sed 's/^fault-matrix //'
grep -q '^test result: ok' "$out"
