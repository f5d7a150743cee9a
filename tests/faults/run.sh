#!/usr/bin/env bash
# The fault matrix (tests/tests/faults.rs) on its own, printed as a table: every fault under load
# in a network namespace, with what the visitors saw. Needs root. `--release` measures the
# release build (as deployed; the default is the debug build CI tests); `--compare` also runs
# every row with nginx and with HAProxy in holdfast's place (installing them if missing).
#   tests/faults/run.sh [--release] [--compare]
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/prereqs.sh
profile=()
for arg in "$@"; do
  case "$arg" in
    --release) profile=(--release) ;;
    --compare)
      export HOLDFAST_MATRIX_COMPARE=1
      if [ ! -x /usr/sbin/nginx ] || [ ! -x /usr/sbin/haproxy ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light haproxy >/dev/null
        for s in nginx haproxy; do service "$s" stop >/dev/null 2>&1 || true; done
      fi ;;
    *) echo "usage: tests/faults/run.sh [--release] [--compare]" >&2; exit 2 ;;
  esac
done
cargo build "${profile[@]}" --workspace --locked --bins
out=$(mktemp)
trap 'rm -f "$out"' EXIT
HOLDFAST_SOAK_SECONDS=${HOLDFAST_SOAK_SECONDS:-60} \
  cargo test "${profile[@]}" --locked -p holdfast-tests --test faults -- --ignored --nocapture --test-threads 1 \
  2>&1 | tee "$out" | grep -E '^test |^soak|panicked' || true
echo
echo "| fault | requests | failed | longest request | to the other backend | failback | gateway's counters |"
echo "|---|---:|---:|---:|---:|---:|---|"
grep -o 'fault-matrix |.*' "$out" | sed 's/^fault-matrix //'
for other in nginx haproxy; do
  if grep -q "fault-matrix-$other |" "$out"; then
    echo
    echo "$other in holdfast's place:"
    echo
    echo "| fault | requests | failed | longest request | to the other backend | failback | |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    grep -o "fault-matrix-$other |.*" "$out" | sed "s/^fault-matrix-$other //"
  fi
done
grep -q '^test result: ok' "$out"
