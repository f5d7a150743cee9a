#!/usr/bin/env bash
# holdfast, nginx and HAProxy side by side on loopback, in one run (see BENCHMARKS.md).
# Installs what is missing (nginx, haproxy, wrk, h2load from Debian's packages), builds holdfast in
# release mode, then runs bench.py; extra arguments go to bench.py (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/prereqs.sh

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The packages may start their own services; the benchmark runs its own instances.
    for s in nginx haproxy; do service "$s" stop >/dev/null 2>&1 || true; done
  else
    echo "bench: missing ${need[*]}; install them first: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

cargo build --release --locked --bin holdfast
exec python3 tests/bench/bench.py --holdfast target/release/holdfast "$@"
