#!/usr/bin/env bash
# The alert rules and the dashboard, checked with real tools: `promtool check rules`, the rules'
# unit tests (`promtool test rules`), `promtool check metrics` on a real scrape of a running
# holdfast, and every metric the rules and the dashboard query present in that scrape.
# Needs promtool (Debian's prometheus package; tests/run.sh installs it as root) and a built
# target/debug/holdfast. Traffic stays on loopback; the gateway it starts is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v promtool >/dev/null 2>&1; then
  why="promtool is missing: apt-get install prometheus (its promtool checks the rules and the dashboard)"
  if [ -n "${CI:-}" ]; then echo "$why" >&2; exit 1; fi
  echo "skipped: $why"; exit 0
fi

promtool check rules deploy/prometheus/holdfast.rules.yml
(cd deploy/prometheus && promtool test rules holdfast.rules.test.yml)

# A real scrape: holdfast with an HTTPS listener (its certificate's expiry is a metric) in
# front of a Python web server, on free loopback ports.
work=$(mktemp -d)
chmod 700 "$work"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(port); https=$(port); admin=$(port); web=$(port)
openssl req -x509 -newkey rsa:2048 -nodes -days 10 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
python3 -m http.server "$web" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
pids+=($!)
cat >"$work/holdfast.toml" <<TOML
[listen]
http = ["127.0.0.1:$http"]
https = ["127.0.0.1:$https"]
tls_cert = "cert.pem"
tls_key = "key.pem"
admin = "127.0.0.1:$admin"
[[pools.app.tiers]]
backends = [{ name = "web", address = "127.0.0.1:$web" }]
TOML
XDG_RUNTIME_DIR="$work" ./target/debug/holdfast run --config "$work/holdfast.toml" >"$work/holdfast.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$http/" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$admin/metrics" >"$work/metrics.txt" || { cat "$work/holdfast.log" >&2; exit 1; }
promtool check metrics <"$work/metrics.txt"

python3 - "$work/metrics.txt" <<'PY'
import json, re, sys
names = set()
for line in open(sys.argv[1]):
    if line.startswith("# TYPE "):
        name, kind = line.split()[2:4]
        names.add(name)
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
queried = {}
dash = json.load(open("deploy/grafana/holdfast.json"))
for panel in dash["panels"]:
    for target in panel["targets"]:
        queried.setdefault(panel["title"], []).append(target["expr"])
rules = open("deploy/prometheus/holdfast.rules.yml").read()
queried["rules"] = re.findall(r"expr: *\|?\n?((?:.|\n)*?)(?=\n *(?:for|labels):)", rules)
missing = []
for where, exprs in queried.items():
    for expr in exprs:
        for name in re.findall(r"\b((?:holdfast|process)_[a-z_]+)\b", expr):
            if name not in names:
                missing.append(f"{where}: {name}")
if missing:
    sys.exit("metrics queried but not exposed:\n  " + "\n  ".join(sorted(set(missing))))
print(f"every metric the rules and the dashboard query is exposed ({len(names)} names in the scrape)")
PY
