#!/usr/bin/env bash
# Profiles holdfast under load and writes a flame graph:
#   tests/bench/profile.sh [OUT.svg] [WORKLOAD-SECONDS] [http-1k|h2-1k|hs-1k]
# One nginx origin, holdfast (release build with line tables: the `profiling` profile) in front of it, wrk -t2 -c64 on a 1 KB file
# (http-1k), the same over HTTPS with `Connection: close`, a full TLS handshake per request (hs-1k),
# or h2load -c4 -m16 over TLS with ALPN h2 (h2-1k, the benchmark's h2 workload; needs h2load), and
# `perf record` (software cpu-clock: hardware counters are not available on every machine) with
# DWARF call graphs on the holdfast process. Needs nginx, wrk, openssl, perf (Debian: linux-perf) and
# inferno (`cargo install inferno`). Writes OUT.svg and the folded stacks next to it (OUT.folded,
# not committed). Traffic stays on 127.0.0.1; it stops what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-tests/bench/profiles/http-1k.svg}
seconds=${2:-6}
workload=${3:-http-1k}
case $workload in http-1k|hs-1k) load=wrk ;; h2-1k) load=h2load ;; *) echo "profile: unknown workload $workload" >&2; exit 2 ;; esac
for tool in nginx $load openssl perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "profile: $tool is missing" >&2; exit 1; }
done
cargo build --profile profiling --locked --bin holdfast

work=$(mktemp -d /tmp/holdfast-profile-XXXXXX)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin=$(port); proxy=$(port); tls=$(port); admin=$(port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
mkdir "$work/www"; head -c 1024 /dev/urandom > "$work/www/1k.bin"; chmod -R a+rX "$work/www"
cat > "$work/origin.conf" <<CONF
worker_processes 1; daemon off; pid $work/origin.pid; error_log $work/origin.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$origin; root $work/www; location = /health { return 200 "ok\n"; } } }
CONF
cat > "$work/holdfast.toml" <<CONF
[listen]
http = ["127.0.0.1:$proxy"]
https = ["127.0.0.1:$tls"]
tls_cert = "$work/cert.pem"
tls_key = "$work/key.pem"
admin = "127.0.0.1:$admin"
[pools.origin.health.http]
path = "/health"
[[pools.origin.tiers]]
backends = [{ address = "127.0.0.1:$origin" }]
CONF
nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
target/profiling/holdfast run --threads 2 --config "$work/holdfast.toml" 2>"$work/holdfast.log" & hf=$!; pids+=($hf)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$proxy) 2>/dev/null && break; sleep 0.1; done

case $workload in
  http-1k) wrk -t2 -c64 -d$((seconds + 4))s "http://127.0.0.1:$proxy/1k.bin" > "$work/load.txt" & pids+=($!) ;;
  hs-1k) wrk -t2 -c64 -d$((seconds + 4))s -H 'Connection: close' "https://127.0.0.1:$tls/1k.bin" > "$work/load.txt" & pids+=($!) ;;
  h2-1k) h2load -t2 -c4 -m16 -D $((seconds + 4)) "https://127.0.0.1:$tls/1k.bin" > "$work/load.txt" & pids+=($!) ;;
esac
sleep 2
perf record -e cpu-clock -F 1999 -g --call-graph dwarf,16384 -p "$hf" -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
wait "${pids[-1]}" || true
mkdir -p "$(dirname "$out")"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "${out%.svg}.folded"
rate=$(grep -E "Requests/sec|^finished in" "$work/load.txt" | tr -s ' ')
# Frames under 0.3 % of the samples are left out: the graph stays readable and small.
inferno-flamegraph --minwidth 0.3 --title "holdfast, $workload, $rate" < "${out%.svg}.folded" > "$out"
grep -E "Requests/sec|Latency|^finished in|^requests:" "$work/load.txt"
echo "flame graph: $out"
